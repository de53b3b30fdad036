"""The library's command line (python -m opticam_lib): bad paths are reported in one line before any model is
loaded, and outputs never overwrite each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import opticam_lib.models.registry as registry
from opticam_lib.__main__ import _unique_stems, main


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a command loads a model: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the paths were checked")

    monkeypatch.setattr(registry, "load_classifier", refuse)


def test_explain_keeps_both_outputs_of_inputs_with_the_same_name(tmp_path, capsys):
    a, b = _png(tmp_path / "a" / "x.png", 0), _png(tmp_path / "b" / "x.png", 1)
    out = tmp_path / "maps"
    code = main(["explain", str(a), str(b), "--model", "world_cnn", "--method", "gradcam", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.glob("*.npy"))
    assert names == ["a_x_gradcam.npy", "b_x_gradcam.npy"]
    assert not np.array_equal(np.load(out / names[0]), np.load(out / names[1]))


def test_unique_stems():
    assert _unique_stems(["p/x.jpg", "q/y.jpg"]) == ["x", "y"]
    assert _unique_stems(["/d/a/x.jpg", "/d/b/x.jpg", "/d/a/y.jpg"]) == ["a_x", "b_x", "y"]
    assert _unique_stems(["/d/a/x.jpg", "/d/a/x.png"]) == ["a_x", "a_x_2"]  # same folder, same stem


def test_explain_into_a_path_below_a_file_fails_in_one_line_before_the_model(tmp_path, capsys, no_model):
    img = _png(tmp_path / "x.png", 0)
    afile = tmp_path / "afile"
    afile.write_text("")
    code = main(["explain", str(img), "--model", "world_cnn", "--out", str(afile / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to" in err and "--out" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_explain_reports_a_missing_input_before_the_model(tmp_path, capsys, no_model):
    code = main(["explain", str(tmp_path / "nope.jpg"), "--model", "world_cnn", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.jpg: no such file" in err


def test_evaluate_json_below_a_file_fails_before_the_model(tmp_path, capsys, no_model):
    afile = tmp_path / "afile"
    afile.write_text("")
    code = main(["evaluate", "--json", str(afile / "t.json")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to" in err and "--json" in err
