"""The review of ``python -m opticam_lib.world``: the shipped files are protected, the report goes next to --out,
the loader checks what a checkpoint holds, every bad input is one ``error:`` line, and the report is updated
under a lock. Every run here writes under ``tmp_path`` only (tiny settings, one thread)."""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path

import pytest
import torch

import opticam_lib.world.__main__ as world_main
import opticam_lib.world.networks as networks
import opticam_lib.world.training as training
from opticam_lib.errors import InputError
from opticam_lib.world.training import read_report

TINY = [
    "--steps",
    "2",
    "--eval-n",
    "0",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--arch-kwargs",
    '{"width": 8}',
]
TINY += ["--config", '{"size": 32}']


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    """The package's data folder moved to tmp_path (holding a stand-in shipped model and report), so that a
    regression writes there, never into opticam_lib/data."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "world_cnn.pt").write_bytes(b"shipped weights")
    (data / "world_report.json").write_text('{"generator": {}, "models": {"world_cnn": {"steps": 800}}}\n')
    monkeypatch.setattr(world_main, "DATA_DIR", data)
    monkeypatch.setattr(world_main, "REPORT_PATH", data / "world_report.json")
    monkeypatch.setattr(training, "REPORT_PATH", data / "world_report.json")
    monkeypatch.setattr(networks, "DATA_DIR", data)
    return data


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# 1. the shipped files are refused without --overwrite-shipped
def test_train_refuses_the_shipped_folder_by_default(fake_data, capsys):
    before = _snapshot(fake_data)
    assert world_main.main(["train", *TINY]) == 2
    assert "--overwrite-shipped" in _one_error_line(capsys)
    assert _snapshot(fake_data) == before


def test_overwrite_shipped_regenerates_the_shipped_model(fake_data, capsys):
    tiny = [a for a in TINY if a not in ("--config", '{"size": 32}')]
    assert world_main.main(["train", *tiny, "--overwrite-shipped"]) == 0
    assert (fake_data / "world_cnn.pt").read_bytes() != b"shipped weights"
    entry = read_report(fake_data / "world_report.json")["models"]["world_cnn"]
    assert entry["steps"] == 2 and entry["command"].endswith("--overwrite-shipped")


def test_help_says_what_overwrite_shipped_does(capsys):
    with pytest.raises(SystemExit):
        world_main.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite-shipped" in text and "shipped model" in text and "world_report.json" in text


def test_speed_refuses_the_shipped_report_by_default(fake_data, capsys):
    before = _snapshot(fake_data)
    assert world_main.main(["speed", "--n", "4", "--size", "32"]) == 2
    assert "--overwrite-shipped" in _one_error_line(capsys)
    assert _snapshot(fake_data) == before


# 2. with --out, the report goes next to it
def test_report_defaults_to_the_folder_of_out(fake_data, tmp_path, capsys):
    before = _snapshot(fake_data)
    out = tmp_path / "elsewhere" / "world_vit.pt"
    assert world_main.main(["train", *TINY, "--out", str(out)]) == 0
    assert _snapshot(fake_data) == before
    assert read_report(out.parent / "world_report.json")["models"]["world_vit"]["steps"] == 2


def test_an_explicit_shipped_report_is_refused(fake_data, tmp_path, capsys):
    before = _snapshot(fake_data)
    args = ["train", *TINY, "--out", str(tmp_path / "m.pt"), "--report", str(fake_data / "world_report.json")]
    assert world_main.main(args) == 2
    assert "--report" in _one_error_line(capsys)
    assert _snapshot(fake_data) == before and not (tmp_path / "m.pt").exists()


# 3. the loader checks the checkpoint against the registered name
def test_loader_refuses_a_checkpoint_of_another_kind(fake_data, tmp_path):
    out = tmp_path / "vit.pt"
    vit = ["--arch", "vit", "--arch-kwargs", '{"dim": 16, "depth": 1, "heads": 2}']
    args = ["train", *TINY[:8], *vit, "--config", '{"size": 32}', "--out", str(out), "--no-report"]
    assert world_main.main(args) == 0
    (fake_data / "world_cnn.pt").write_bytes(out.read_bytes())
    with pytest.raises(InputError, match=r"not a world_cnn checkpoint .*arch 'vit'.*32 px"):
        networks.load_world_model("world_cnn")
    ck = torch.load(out, weights_only=True)
    ck["meta"]["arch"], ck["meta"]["arch_kwargs"] = "cnn", {"width": 8}
    ck["meta"]["permuted_labels"] = True
    assert "permuted" in networks.checkpoint_mismatch("world_cnn", ck["meta"])


def test_overwrite_shipped_refuses_the_wrong_architecture_for_a_name(fake_data, capsys):
    before = _snapshot(fake_data)
    args = [
        "train",
        *TINY[:8],
        "--arch",
        "vit",
        "--out",
        str(fake_data / "world_cnn.pt"),
        "--overwrite-shipped",
    ]
    assert world_main.main(args) == 2
    _one_error_line(capsys)
    assert _snapshot(fake_data) == before


# 4. bad inputs: one error line, exit 2 (usage) or 1 (other), nothing written
BAD = [
    ["train", "--steps", "-1"],
    ["train", "--config", "{bad"],
    ["train", "--config", '{"nonsense": 1}'],
    ["train", "--config", "[1, 2]"],
    ["train", "--arch-kwargs", '{"bogus": 1}'],
    ["train", "--device", "cuda:99"],
    ["train", "--device", "bogus"],
    ["train", "--threads", "-1"],
    ["train", "--lr", "nan"],
    ["train", "--lr", "-1"],
    ["train", "--eval-n", "-5"],
    ["train", "--batch-size", "0"],
    ["train", "--train-set", "0"],
    ["speed", "--n", "0"],
    ["speed", "--size", "3"],
    ["evidence", "--model", "bogus"],
    ["evidence", "--n", "0"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_inputs_are_one_error_line(argv, tmp_path, capsys):
    extra = ["--out", str(tmp_path / "m.pt")] if argv[0] == "train" else []
    extra += ["--report", str(tmp_path / "r.json")] if argv[0] == "speed" else []
    assert world_main.main([*argv, *extra]) == 2
    _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_cuda_is_one_error_line(tmp_path, capsys):
    assert world_main.main(["train", "--device", "cuda", "--out", str(tmp_path / "m.pt")]) == 2
    assert "CUDA" in _one_error_line(capsys)


def test_missing_weights_are_one_error_line_exit_1(fake_data, capsys):
    (fake_data / "world_cnn.pt").unlink()
    assert world_main.main(["evidence", "--model", "world_cnn", "--n", "4"]) == 1
    assert "train --arch cnn --overwrite-shipped" in _one_error_line(capsys)


def test_library_train_refuses_bad_settings():
    for kwargs in ({"steps": -1}, {"batch_size": 0}, {"lr": float("nan")}, {"eval_n": -5}):
        with pytest.raises(InputError):
            training.train("cnn", progress=False, **kwargs)


# 5. --steps 0 is refused, not the default 800
def test_zero_steps_are_refused(tmp_path, capsys, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("trained")

    monkeypatch.setattr(world_main, "train", no_training)
    assert world_main.main(["train", "--steps", "0", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--steps" in _one_error_line(capsys)
    with pytest.raises(InputError, match="steps"):
        training.train("cnn", steps=0, progress=False)


# 6. output and report are checked before training; a damaged report writes nothing
def test_a_damaged_report_stops_the_run_before_training(tmp_path, capsys, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("trained")

    monkeypatch.setattr(world_main, "train", no_training)
    rep = tmp_path / "report.json"
    rep.write_text("{not json")
    out = tmp_path / "m.pt"
    assert world_main.main(["train", *TINY, "--out", str(out), "--report", str(rep)]) == 2
    assert "cannot be read as JSON" in _one_error_line(capsys)
    assert not out.exists() and rep.read_text() == "{not json"


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("trained")

    monkeypatch.setattr(world_main, "train", no_training)
    (tmp_path / "folder.pt").mkdir()
    assert world_main.main(["train", *TINY, "--out", str(tmp_path / "folder.pt")]) == 2
    assert "is a folder" in _one_error_line(capsys)


def test_report_damaged_during_training_leaves_no_weights(tmp_path, capsys, monkeypatch):
    rep, out = tmp_path / "report.json", tmp_path / "m.pt"
    real_train = world_main.train

    def train_then_damage(*a, **k):
        result = real_train(*a, **k)
        rep.write_text("{damaged")  # another program breaks the report while this run trains
        return result

    monkeypatch.setattr(world_main, "train", train_then_damage)
    assert world_main.main(["train", *TINY, "--out", str(out), "--report", str(rep)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: ") and "cannot be read as JSON" in last
    assert not out.exists()


# 7. concurrent updates of one report keep every entry
def test_concurrent_report_updates_keep_every_entry(tmp_path, monkeypatch):
    rep = tmp_path / "report.json"
    slow_read = training.read_report

    def read_slowly(path):
        report = slow_read(path)
        time.sleep(0.05)  # widen the read-modify-write window
        return report

    monkeypatch.setattr(training, "read_report", read_slowly)
    threads = [
        threading.Thread(target=training._write_report, args=({"models": {f"m{i}": {"i": i}}}, rep))
        for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(json.loads(rep.read_text())["models"]) == [f"m{i}" for i in range(6)]
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no lock file left behind


def test_the_shipped_reports_commands_regenerate_the_shipped_files():
    # a command copied from the shipped report must not be refused as a write into the shipped folder
    shipped = Path(world_main.__file__).resolve().parents[1] / "data" / "world_report.json"
    models = read_report(shipped)["models"]
    assert models
    for name, entry in models.items():
        words = shlex.split(entry["command"])
        assert words[:3] == ["python", "-m", "opticam_lib.world"], name
        args = world_main.build_parser().parse_args(words[3:])
        assert args.overwrite_shipped, f"{name}: {entry['command']}"
