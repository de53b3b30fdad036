"""What a user sees of the package: every exported name exists, ``help()`` shows the options a wrapper forwards,
and every method takes the name its function has."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import opticam_lib
from opticam_lib.errors import InputError
from opticam_lib.methods.registry import METHODS, explain, get_method


def _packages() -> list[str]:
    names = ["opticam_lib"]
    for info in pkgutil.walk_packages(opticam_lib.__path__, "opticam_lib."):
        if info.ispkg:
            names.append(info.name)
    return names


@pytest.mark.parametrize("package", _packages())
def test_every_name_in_all_exists(package):
    module = importlib.import_module(package)
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert missing == [], f"{package}.__all__ names what it does not define: {missing}"


def test_star_import_gives_the_readme_loaders():
    space: dict = {}
    exec("from opticam_lib import *", space)
    assert {"load_samples", "load_image", "load_images", "ImageSet", "load_classifier", "opticam"} <= set(
        space
    )
    assert "load_samples" in dir(opticam_lib)


@pytest.mark.parametrize(
    "wrapper, worker",
    [("opticam", "optimize"), ("extremal_perturbation", "optimize_extremal")],
)
def test_wrappers_show_the_options_they_forward_and_return_maps(wrapper, worker):
    from opticam_lib import methods

    shown = inspect.signature(getattr(methods, wrapper))
    forwarded = inspect.signature(getattr(methods, worker))
    assert list(shown.parameters) == list(forwarded.parameters)
    assert shown.return_annotation in ("Tensor", torch.Tensor)


def test_a_misspelt_extremal_option_is_an_input_error():
    with pytest.raises(InputError, match=r"no option 'itertions'.*iterations"):
        explain(None, torch.zeros(1, 3, 8, 8), "experturbation", itertions=5)


def test_every_method_is_found_by_its_function_name():
    for key, info in METHODS.items():
        assert get_method(info.fn.__name__) is info.fn, key
