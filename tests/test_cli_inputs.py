"""Bad command-line inputs are refused in one line (exit code 2, no traceback), before any long work: world
images for an ImageNet model, an infinite learning rate, odd image specs, files that are not checkpoints, output
paths that are folders, world models on the ImageNet sample photos; and a model fine-tuned from ``--root`` can
be evaluated."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import opticam_lib.models.registry as registry
from opticam_lib.__main__ import main
from opticam_lib.errors import InputError
from opticam_lib.paper.reproduce import _parse_spec, load_image_spec


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(" ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a command loads a model: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(registry, "load_classifier", refuse)


# 1. world images need a world model
def test_world_images_are_refused_for_a_model_without_a_world():
    imagenet_like = SimpleNamespace(name="efficientnet_lite0", extra={}, num_classes=1000)
    with pytest.raises(InputError, match="world_cnn"):
        load_image_spec("world:2", 64, imagenet_like)


def test_reproduce_world_images_with_the_default_model_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["reproduce", "--images", "world:2", "--iterations", "2", "--out", str(out), "--quiet"])
    assert code == 2
    _one_line_error(capsys, "world", "world_cnn", "efficientnet_lite0")
    assert not (out / "table.json").exists()


# 2. a finite positive learning rate
@pytest.mark.parametrize("lr", ["inf", "-inf", "nan", "0", "-1"])
def test_reproduce_refuses_a_learning_rate_that_is_not_finite_and_positive(lr, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["reproduce", "--model", "world_cnn", "--images", "world:4", "--iterations", "2"]
    assert main([*args, f"--lr={lr}", "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, "lr must be a positive finite number")
    assert not (out / "config.json").exists()


# 3. image specs
def test_a_folder_with_a_colon_in_its_path_is_that_folder(tmp_path):
    folder = tmp_path / "col:on"
    folder.mkdir()
    assert _parse_spec(str(folder)) == (str(folder), None)
    assert _parse_spec(f"{folder}:3") == (str(folder), 3)
    assert _parse_spec("world:4") == ("world", 4)


@pytest.mark.parametrize("spec", ["world:²", "world:١", "world:0", "world:x", "world:-2", "samples:1.5"])
def test_bad_image_counts_raise_input_error(spec):
    with pytest.raises(InputError, match="bad image count"):
        _parse_spec(spec)


def test_reproduce_superscript_count_fails_in_one_line(tmp_path, capsys):
    args = ["reproduce", "--model", "world_cnn", "--images", "world:²", "--iterations", "2"]
    assert main([*args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    _one_line_error(capsys, "bad image count")


# 4. files that are not checkpoints of 'medical finetune'
def _not_checkpoints(tmp_path: Path) -> list[Path]:
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(png)
    torch.save({"a": 1}, tmp_path / "dict.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"state_dict": {}, "meta": 5}, tmp_path / "badmeta.pt")
    return [png, tmp_path / "dict.pt", tmp_path / "tensor.pt", tmp_path / "badmeta.pt"]


def test_medical_evaluate_refuses_files_that_are_not_checkpoints(tmp_path, capsys):
    for path in _not_checkpoints(tmp_path):
        assert main(["medical", "evaluate", "--checkpoint", str(path), "--quiet"]) == 2, path
        _one_line_error(capsys, str(path), "not a checkpoint written by 'medical finetune'")


# 5. a model fine-tuned from --root is evaluated on that folder
def _tiny_medical(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for cls in ("NORMAL", "PNEUMONIA"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for k in range(n):
                img = rng.integers(0, 255, (48, 48), dtype=np.uint8)
                Image.fromarray(img, mode="L").save(folder / f"{cls.lower()}_{k}.png")
    return root


def test_medical_evaluate_reads_the_root_of_finetune(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTICAM_CACHE", str(tmp_path / "empty_cache"))  # nothing in the download cache
    root = _tiny_medical(tmp_path / "my xrays")
    run = tmp_path / "run"
    ft = ["medical", "finetune", "--dataset", "chest-xray", "--model", "world_cnn", "--root", str(root)]
    ft += ["--head-epochs", "1", "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--workers", "0"]
    assert main([*ft, "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    ev = ["medical", "evaluate", "--checkpoint", str(run / "model.pt"), "--images", "2"]
    ev += ["--methods", "fakecam", "--iterations", "2", "--batch-size", "2", "--quiet"]
    assert main([*ev, "--out", str(tmp_path / "a10")]) == 0, capsys.readouterr().err
    table = json.loads((tmp_path / "a10" / "table.json").read_text())["table"]
    assert table["Fake-CAM"]["images"] == 2
    # --root names the folder explicitly (here the same data, moved)
    moved = root.rename(tmp_path / "moved")
    assert main([*ev, "--out", str(tmp_path / "a10b")]) == 2  # the saved root is gone
    capsys.readouterr()
    assert main([*ev, "--root", str(moved), "--out", str(tmp_path / "a10c")]) == 0
    assert json.loads((tmp_path / "a10c" / "table.json").read_text())["table"]["Fake-CAM"]["images"] == 2


def test_a_relative_root_of_finetune_is_found_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTICAM_CACHE", str(tmp_path / "empty_cache"))
    _tiny_medical(tmp_path / "data" / "xr")
    monkeypatch.chdir(tmp_path / "data")
    ft = ["medical", "finetune", "--dataset", "chest-xray", "--model", "world_cnn", "--root", "xr"]
    ft += ["--head-epochs", "1", "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--workers", "0"]
    assert main([*ft, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # where 'xr' means nothing
    ev = ["medical", "evaluate", "--checkpoint", str(tmp_path / "run" / "model.pt"), "--images", "2"]
    ev += ["--methods", "fakecam", "--iterations", "2", "--batch-size", "2", "--quiet"]
    assert main([*ev, "--out", str(tmp_path / "a10")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "a10" / "table.json").read_text())["table"]["Fake-CAM"]["images"] == 2


# 6. output paths checked before the model and the work
def test_evaluate_json_that_is_a_folder_fails_before_the_model(tmp_path, capsys, no_model):
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["evaluate", "--json", str(folder), "--quiet"]) == 2
    _one_line_error(capsys, str(folder), "folder", "--json")


def test_precompute_out_that_is_a_folder_fails_before_the_model_without_a_tmp(tmp_path, capsys, no_model):
    folder = tmp_path / "o"
    folder.mkdir()
    assert main(["precompute", "--out", str(folder), "--quiet"]) == 2
    _one_line_error(capsys, str(folder), "folder", "--out")
    assert not Path(f"{folder}.tmp").exists()


def test_precompute_out_below_a_file_fails_before_the_model(tmp_path, capsys, no_model):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["precompute", "--out", str(afile / "c.pt"), "--quiet"]) == 2
    _one_line_error(capsys, "--out")


def test_build_channel_cache_checks_its_path_before_the_work(tmp_path):
    from opticam_lib.course.channel_cache import build_channel_cache

    clf = registry.load_classifier("world_cnn")
    with pytest.raises(InputError, match="folder"):
        build_channel_cache(clf, torch.zeros(1, 3, 64, 64), torch.zeros(1, dtype=torch.long), path=tmp_path)


# 7. evaluate and precompute use the ImageNet sample photos
@pytest.mark.parametrize("command", ["evaluate", "precompute"])
def test_world_models_are_pointed_to_reproduce_world(command, tmp_path, capsys):
    args = [command, "--model", "world_cnn", "--quiet"]
    args += (
        ["--json", str(tmp_path / "t.json")] if command == "evaluate" else ["--out", str(tmp_path / "c.pt")]
    )
    assert main(args) == 2
    _one_line_error(capsys, "ImageNet sample photos", "reproduce", "world:")


# 6. a third review: options that do not apply, huge numbers, odd devices, damaged checkpoints, Ctrl-C
def test_layer_for_a_method_without_feature_maps_and_huge_iterations_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "x.png", "--method", "cam", "--layer", "features.0"])
    assert exit_.value.code == 2 and "--layer does not apply to cam" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "x.png", "--iterations", str(10**11)])
    assert (
        exit_.value.code == 2
        and "--iterations must be an integer from 1 to 100,000" in capsys.readouterr().err
    )


@pytest.mark.parametrize("device", ["meta", "xpu"])
def test_devices_pytorch_knows_but_the_library_does_not_are_named(device):
    with pytest.raises(InputError, match=f"device '{device}' is not supported by the library"):
        registry.usable_device(device)


def test_a_cpu_index_other_than_0_is_named(tmp_path, capsys):
    assert registry.usable_device("cpu:0") == torch.device("cpu:0")
    with pytest.raises(InputError, match="device 'cpu:7': there is one CPU device, use 'cpu'"):
        registry.usable_device("cpu:7")
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(png)
    assert main(["explain", str(png), "--device", "cpu:7", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "there is one CPU device")


def test_ctrl_c_and_memory_errors_are_one_line(monkeypatch, capsys):
    import opticam_lib.__main__ as cli

    def interrupted(args):
        raise KeyboardInterrupt

    def too_big(args):
        raise RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 400000000000 bytes"
        )

    monkeypatch.setattr(cli, "cmd_models", interrupted)
    assert main(["models"]) == 130 and capsys.readouterr().err.strip() == "interrupted"
    monkeypatch.setattr(cli, "cmd_models", too_big)
    assert main(["models"]) == 2
    _one_line_error(capsys, "not enough memory")


def test_checkpoints_with_a_wrong_meta_or_wrong_weights_are_named(tmp_path):
    from opticam_lib.paper.medical import load_finetuned

    odd = tmp_path / "odd.pt"
    torch.save({"state_dict": {}, "meta": "march"}, odd)  # "arch" in "march": a substring test would pass
    with pytest.raises(InputError, match=r"not a checkpoint of opticam_lib\.paper\.medical"):
        load_finetuned(odd)
    wrong = tmp_path / "wrong.pt"
    meta = {"arch": "world_cnn", "classes": ["a", "b"], "dataset": "chest-xray"}
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(2, 3)}, "meta": meta}, wrong)
    with pytest.raises(InputError, match=r"wrong\.pt: its weights do not fit world_cnn with 2 classes"):
        load_finetuned(wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02garbage")
    with pytest.raises(InputError, match="cannot be read as a checkpoint") as err:
        load_finetuned(garbage)
    assert "weights_only set to False" not in str(err.value)  # not torch's advice to load unsafely


def test_finetune_refuses_a_negative_worker_count(tmp_path):
    from opticam_lib.paper.medical import FinetuneConfig, finetune

    with pytest.raises(InputError, match="workers must be a non-negative integer"):
        finetune(FinetuneConfig(dataset="chest-xray", model="world_cnn", root=str(tmp_path), workers=-1))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["explain", "x.png", "--method", "gradcam", "--iterations", "5"],
            "--iterations applies to Opti-CAM only",
        ),
        (["explain", "x.png", "--method", "experturbation", "--lr=-5"], "--lr applies to Opti-CAM only"),
        (["evaluate", "--methods", "fakecam,gradcam", "--lr", "0.5"], "--lr applies to Opti-CAM only"),
        (["explain", "x.png", "--method", "gradcam", "--iter", "5"], "--iterations applies to Opti-CAM only"),
        (["evaluate", "--methods", "cam,fakecam", "--layer", "conv_head"], "--layer applies to none of cam"),
    ],
)
def test_options_no_listed_method_takes_are_usage_errors_not_silently_dropped(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_layer_some_listed_methods_ignore_gets_a_note(capsys, monkeypatch):
    import opticam_lib.__main__ as cli

    monkeypatch.setattr(cli, "cmd_evaluate", lambda args: 0)  # the options are checked before any work
    assert main(["evaluate", "--methods", "fakecam,gradcam", "--layer", "blocks.6"]) == 0
    assert "note: --layer blocks.6 is not used by fakecam" in capsys.readouterr().err


def test_evaluate_records_opticam_settings_only_when_an_opticam_row_ran(tmp_path):
    out = tmp_path / "t.json"
    assert main(["evaluate", "--methods", "fakecam", "--limit", "1", "--quiet", "--json", str(out)]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["model"] == "efficientnet_lite0" and "iterations" not in meta and "lr" not in meta
