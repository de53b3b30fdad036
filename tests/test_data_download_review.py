"""data_download: one test per problem a review found (races, advice that loops, the user's own folder, damaged
inputs and metadata, options that were silently ignored, unpasteable commands). Same fixtures as
``test_data_download.py``: a local HTTP server and a cache folder of each test's own."""

# ruff: noqa: F811  (the fixtures ``server`` and ``cache`` are imported from test_data_download, then requested)

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from test_data_download import (  # the fixtures and helpers of the main data_download tests
    BLOB,
    _dataset_item,
    _kvasir_tgz,
    _manifest,
    _rows,
    _Server,
    _sha256,
    _tar_bytes,
    _val_fixture,
    _weights_item,
    _write_manifest,
    cache,  # noqa: F401 (autouse fixture)
    server,  # noqa: F401 (fixture)
)

import data_download
import data_download.__main__ as cli
import data_download.fetch as fetch_module
from data_download import (
    ChecksumError,
    DamagedArchiveError,
    DataDownloadError,
    ManualStepRequired,
    WrongArchiveError,
    fetch_item,
    format_list,
    item_status,
    load_manifest,
)
from data_download.__main__ import build_parser, main
from data_download.datasets import read_bbox_archive, read_loc_solution
from data_download.fetch import Digests, FileSpec, State, command_for, verify_file

QUIET = {"progress": False, "log": lambda s: None}


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line the command printed (progress lines aside), checked to be the only one."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("python -m data_download")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------------------------------------
# 1. Checking a file in place never moves aside a file another process has just installed


def test_a_plain_run_never_sets_aside_the_good_file_a_concurrent_force_run_installs(
    server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    dest = cache / "weights" / "tiny.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"damaged" * 100)
    real, concurrent = fetch_module.hash_file, []

    def interleaved(path: Path, **kw: Any) -> Digests:
        digests = real(path, **kw)
        if not concurrent and Path(path) == dest:  # while the plain run checks the file: a --force run
            try:
                fetch_item("tiny", manifest=m, cache=cache, force=True, **QUIET)
                concurrent.append("installed")
            except DataDownloadError as e:
                concurrent.append(str(e))
        return digests

    monkeypatch.setattr(fetch_module, "hash_file", interleaved)
    with pytest.raises(ChecksumError, match="moved aside"):
        fetch_item("tiny", manifest=m, cache=cache, **QUIET)
    assert "another data_download process" in concurrent[0]  # the --force run waits for the check
    assert (cache / "weights" / "tiny.bin.corrupt").read_bytes() != BLOB  # only the damaged file moved aside
    monkeypatch.setattr(fetch_module, "hash_file", real)
    assert fetch_item("tiny", manifest=m, cache=cache, **QUIET).read_bytes() == BLOB


def test_a_file_replaced_while_it_is_checked_is_not_moved_aside(
    server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    dest = cache / "weights" / "tiny.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"damaged" * 100)
    real = fetch_module.hash_file

    def replaced(path: Path, **kw: Any) -> Digests:
        digests = real(path, **kw)
        if Path(path) == dest:  # a good copy is put there (by hand) once the old bytes were hashed
            tmp = dest.with_name("good.tmp")
            tmp.write_bytes(BLOB)
            os.replace(tmp, dest)
        return digests

    monkeypatch.setattr(fetch_module, "hash_file", replaced)
    with pytest.raises(DataDownloadError, match="changed while it was being checked"):
        fetch_item("tiny", manifest=m, cache=cache, **QUIET)
    assert dest.read_bytes() == BLOB and not dest.with_name("tiny.bin.corrupt").exists()


# ------------------------------------------------------------------------------------------------------------------
# 2. Following the --forget-recorded advice fetches the new file


def test_following_the_forget_recorded_advice_literally_installs_the_new_file(
    server: _Server, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = BLOB, BLOB[::-1] + b"more"
    mf = _write_manifest(
        tmp_path / "m.json", {"tiny": _weights_item(server.url("/tiny.bin"), None, sha256=None, size=None)}
    )
    extra = ["--manifest", str(mf), "--quiet"]
    server.files["/tiny.bin"] = old
    assert main(["tiny", *extra]) == 0
    server.files["/tiny.bin"] = new  # changed upstream, legitimately
    capsys.readouterr()
    assert main(["tiny", "--force", *extra]) == 1
    advice = re.search(r"drop the record with: (.+? --forget-recorded)", capsys.readouterr().err)
    assert advice is not None
    words = shlex.split(advice.group(1))
    assert words[:3] == ["python", "-m", "data_download"]
    assert main([*words[3:], *extra]) == 0
    assert (cache / "weights" / "tiny.bin").read_bytes() == new
    assert State(cache).recorded("tiny", "tiny.bin")["sha256"] == _sha256(new)


@pytest.mark.parametrize("keep_archive", [False, True])
def test_forget_recorded_fetches_a_data_set_again(server: _Server, cache: Path, keep_archive: bool) -> None:
    old, new = _kvasir_tgz(2), _kvasir_tgz(3)
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir.tgz", server.url("/k.tgz"), None))
    server.files["/k.tgz"] = old
    fetch_item("kvasir", manifest=m, cache=cache, keep_archive=keep_archive, **QUIET)
    server.files["/k.tgz"] = new
    asked = server.sent("/k.tgz")
    folder = fetch_item(
        "kvasir", manifest=m, cache=cache, keep_archive=keep_archive, forget_recorded=True, **QUIET
    )
    assert server.sent("/k.tgz") > asked  # not "already prepared", not the old archive recorded anew
    assert State(cache).recorded("kvasir", "kvasir.tgz")["sha256"] == _sha256(new)
    assert len(list(folder.rglob("*.jpg"))) == 24


# ------------------------------------------------------------------------------------------------------------------
# 3. The user's own data set folder is never deleted


def _own_kvasir(cache: Path) -> Path:
    own = cache / "datasets" / "kvasir"
    for split in ("train", "val", "test"):
        (own / split / "polyps").mkdir(parents=True)
        (own / split / "polyps" / "my_scan.jpg").write_bytes(b"precious")
    (own / "my_notes.txt").write_text("weeks of work")
    return own


def test_the_users_own_data_set_folder_is_refused_and_left_alone(
    server: _Server, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _kvasir_tgz(2)
    server.files["/k.tgz"] = archive
    mf = _write_manifest(
        tmp_path / "m.json", {"kvasir": _dataset_item("kvasir", "kvasir.tgz", server.url("/k.tgz"), archive)}
    )
    own = _own_kvasir(cache)
    assert main(["kvasir", "--manifest", str(mf), "--quiet"]) == 1
    err = _one_line_error(capsys)
    assert str(own) in err and "--force" in err and "left alone" in err
    assert (own / "my_notes.txt").read_text() == "weeks of work"
    assert len(list(own.rglob("my_scan.jpg"))) == 3
    assert server.requests == []  # refused before downloading anything


def test_force_moves_the_users_own_folder_to_a_backup_and_says_so(server: _Server, cache: Path) -> None:
    archive = _kvasir_tgz(2)
    server.files["/k.tgz"] = archive
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir.tgz", server.url("/k.tgz"), archive))
    own = _own_kvasir(cache)
    said: list[str] = []
    folder = fetch_item("kvasir", manifest=m, cache=cache, force=True, progress=False, log=said.append)
    backups = list(own.parent.glob("kvasir.user-backup-*"))
    assert len(backups) == 1 and (backups[0] / "my_notes.txt").read_text() == "weeks of work"
    assert len(list(backups[0].rglob("my_scan.jpg"))) == 3
    assert any(str(backups[0]) in s for s in said)
    assert (folder / ".complete.json").is_file() and len(list(folder.rglob("*.jpg"))) == 16


# ------------------------------------------------------------------------------------------------------------------
# 4. Bad ImageNet annotation files: one clear error naming the file (and the member)

XML = (
    "<annotation><size><width>{w}</width><height>375</height></size><object><name>n01440764</name><bndbox>"
    "<xmin>{x}</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>"
)


def _bbox_tgz(path: Path, n: int, bad: str) -> Path:
    members = {f"val/ILSVRC2012_val_{i:08d}.xml": XML.format(w=500, x=1).encode() for i in range(1, n + 1)}
    members["val/ILSVRC2012_val_00000002.xml"] = bad.encode()
    path.write_bytes(_tar_bytes(members))
    return path


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        ("<annotation><object>", DamagedArchiveError, "not well-formed XML"),
        (XML.format(w=500, x="one"), WrongArchiveError, "xmin is 'one'"),
        (XML.format(w="nan", x=1), WrongArchiveError, "width is 'nan'"),
    ],
)
def test_a_bad_member_of_the_bbox_archive_is_named(
    tmp_path: Path, bad: str, error: type[Exception], words: str
) -> None:
    bbox = _bbox_tgz(tmp_path / "ILSVRC2012_bbox_val_v3.tgz", 4, bad)
    with pytest.raises(error) as err:
        read_bbox_archive(bbox)
    assert str(bbox) in str(err.value) and "ILSVRC2012_val_00000002.xml" in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 x 4\n", "line 2"),
        (b"ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 \xff\xfe\n", "not UTF-8"),
        (b"ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 inf\n", "'inf'"),
        (b"ImageId,PredictionString\nILSVRC2012_val_00000001\n", None),  # a short row: no label, no crash
    ],
)
def test_a_bad_loc_val_solution_is_a_clear_error(tmp_path: Path, content: bytes, words: str | None) -> None:
    csv_file = tmp_path / "LOC_val_solution.csv"
    csv_file.write_bytes(content)
    if words is None:
        assert read_loc_solution(csv_file) == {}
        return
    with pytest.raises(WrongArchiveError) as err:
        read_loc_solution(csv_file)
    assert str(csv_file) in str(err.value) and words in str(err.value)


def test_a_truncated_bbox_archive_member_through_the_command_is_one_line(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    img_tar, _, _ = _val_fixture(tmp_path, 4)
    bbox = _bbox_tgz(tmp_path / "ILSVRC2012_bbox_val_v3.tgz", 4, "<annotation><object>")
    item = json.loads(Path(data_download.__file__).with_name("manifest.json").read_text())["items"][
        "imagenet-val"
    ]
    item["files"][0].update(size=img_tar.stat().st_size, md5=None)
    mf = _write_manifest(tmp_path / "m.json", {"imagenet-val": item})
    monkeypatch.setattr(cli, "fetch_item", functools.partial(fetch_item, imagenet_total=4))
    argv = ["imagenet-val", "--manifest", str(mf), "--quiet", "--from", str(img_tar), "--from", str(bbox)]
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert f"{bbox} is damaged or incomplete" in err and "ILSVRC2012_val_00000002.xml" in err
    assert not (cache / "datasets" / "imagenet-val").exists()


# ------------------------------------------------------------------------------------------------------------------
# 5. imagenet-val: a folder prepared with more images holds the subset asked for


def _prepare_all(tmp_path: Path, cache: Path, n: int) -> Path:
    img_tar, bbox, _ = _val_fixture(tmp_path, n)
    m = _manifest_for(img_tar)
    return fetch_item(
        "imagenet-val",
        manifest=m,
        cache=cache,
        sources=[img_tar, bbox],
        subset=None,
        imagenet_total=n,
        **QUIET,
    )


def _manifest_for(img_tar: Path) -> data_download.Manifest:
    item = json.loads(Path(data_download.__file__).with_name("manifest.json").read_text())["items"][
        "imagenet-val"
    ]
    item["files"][0].update(size=img_tar.stat().st_size, md5=None)
    return data_download.parse_manifest({"items": {"imagenet-val": item}})


def test_an_imagenet_val_superset_is_already_prepared_unless_a_subset_is_asked_for(
    tmp_path: Path, cache: Path
) -> None:
    folder = _prepare_all(tmp_path, cache, 12)
    m = _manifest_for(tmp_path / "ILSVRC2012_img_val.tar")
    said: list[str] = []
    # the subsets are nested: the 5 chosen images are among the 12 prepared
    chosen = data_download.imagenet_subset_ids(5, 12)
    assert {int(r["file"][-13:-5]) for r in _rows(folder / "labels.csv")} >= set(chosen)
    got = fetch_item(
        "imagenet-val", manifest=m, cache=cache, subset=5, imagenet_total=12, progress=False, log=said.append
    )
    assert got == folder and "already prepared" in said[0]
    with pytest.raises(ManualStepRequired) as err:  # --subset 5 given: exactly 5 asked for
        fetch_item(
            "imagenet-val", manifest=m, cache=cache, subset=5, exact_subset=True, imagenet_total=12, **QUIET
        )
    text = str(err.value)
    assert "prepared" in text and "12 images" in text and "--subset 5 --from" in text
    assert "cannot be downloaded for you" not in text


def test_the_command_says_whether_subset_was_given(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "fetch_item", lambda name, **kw: calls.append(kw))
    assert main(["imagenet-val", "--quiet"]) == 0
    assert main(["imagenet-val", "--quiet", "--subset", "1000"]) == 0
    assert main(["imagenet-val", "--quiet", "--subset", "all"]) == 0
    assert [(c["subset"], c["exact_subset"]) for c in calls] == [(1000, False), (1000, True), (None, True)]


# ------------------------------------------------------------------------------------------------------------------
# 6. Damaged metadata: one line, never a traceback


@pytest.mark.parametrize("which", ["folder", "binary", "target"])
def test_a_bad_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str) -> None:
    path = tmp_path / "m.json"
    if which == "folder":
        path = tmp_path
    elif which == "binary":
        path.write_bytes(b'{"items": {"\xff\xfe": 1}}')
    else:
        item = _weights_item("https://example.org/t.bin", BLOB)
        item["target"] = 5
        _write_manifest(path, {"tiny": item})
    with pytest.raises(SystemExit) as exc:
        main(["LIST", "--manifest", str(path)])
    assert exc.value.code == 2
    assert str(path) in _one_line_error(capsys) or which == "target"


@pytest.mark.parametrize("marker", [b"{}", b"[1]", b"\xff\xfe\x00binary", b'{"files": {"a.jpg": "big"}}'])
def test_a_damaged_marker_is_reported_and_prepared_again(
    server: _Server, cache: Path, capsys: pytest.CaptureFixture[str], marker: bytes
) -> None:
    archive = _kvasir_tgz(2)
    server.files["/k.tgz"] = archive
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir.tgz", server.url("/k.tgz"), archive))
    folder = fetch_item("kvasir", manifest=m, cache=cache, **QUIET)
    (folder / ".complete.json").write_bytes(marker)
    status = item_status(m.get("kvasir"), cache)
    assert status.state == "damaged" and "--force" in status.detail
    assert "DAMAGED" in format_list(m, cache, deep=True)
    folder = fetch_item("kvasir", manifest=m, cache=cache, **QUIET)  # ours (it has a marker): prepared again
    assert item_status(m.get("kvasir"), cache).state == "ready" and len(list(folder.rglob("*.jpg"))) == 16


# ------------------------------------------------------------------------------------------------------------------
# 7. A failed state write leaves no temporary file, and the message says only what is true


def test_a_full_disk_while_recording_leaves_no_temporary_file(
    server: _Server,
    tmp_path: Path,
    cache: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.files["/tiny.bin"] = BLOB
    mf = _write_manifest(
        tmp_path / "m.json", {"tiny": _weights_item(server.url("/tiny.bin"), BLOB, sha256=None)}
    )
    real = fetch_module.json.dumps

    def full_disk(*a: Any, **k: Any) -> str:
        if k.get("indent") == 1:  # the state file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(fetch_module.json, "dumps", full_disk)
    assert main(["tiny", "--manifest", str(mf), "--quiet"]) == 1
    err = _one_line_error(capsys)
    assert list(cache.rglob("*.tmp")) == []
    parts = list(cache.rglob("*.part"))
    assert ("resumes" in err) == bool(parts) and all(str(p) in err for p in parts)
    assert not (cache / "weights" / "tiny.bin").exists()  # nothing unrecorded put in place
    monkeypatch.setattr(fetch_module.json, "dumps", real)
    assert main(["tiny", "--manifest", str(mf), "--quiet"]) == 0
    assert (cache / "weights" / "tiny.bin").read_bytes() == BLOB


def test_list_on_an_unreadable_cache_does_not_speak_of_resuming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c" / ".data_download" / "state.json").mkdir(parents=True)  # unreadable: a folder
    item = _weights_item("https://example.org/t.bin", BLOB, sha256=None)  # LIST reads its recorded checksum
    mf = _write_manifest(tmp_path / "m.json", {"tiny": item})
    assert main(["LIST", "--manifest", str(mf), "--cache", str(tmp_path / "c")]) == 1
    err = _one_line_error(capsys)
    assert "writable" in err and "resume" not in err


# ------------------------------------------------------------------------------------------------------------------
# 8. --timeout: a finite number of seconds, within bounds


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "0", "-1", "1e9", "abc"])
def test_an_unusable_timeout_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["resnet50", "--timeout", value])
    assert exc.value.code == 2 and "--timeout" in _one_line_error(capsys)


def test_a_usable_timeout_is_accepted() -> None:
    assert build_parser().parse_args(["resnet50", "--timeout", "2.5"]).timeout == 2.5


# ------------------------------------------------------------------------------------------------------------------
# 9. Printed commands can be pasted into a shell


def test_printed_commands_are_shell_quoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spaced = tmp_path / "my cache"
    words = shlex.split(command_for("kvasir", spaced))
    assert build_parser().parse_args(words[3:]).cache == spaced
    full = _kvasir_tgz(2)
    mf = _write_manifest(
        tmp_path / "m.json", {"kvasir": _dataset_item("kvasir", "kvasir.tgz", None, None, manual=True)}
    )
    mine = tmp_path / "my files" / "kvasir.tgz"
    mine.parent.mkdir()
    mine.write_bytes(full[: len(full) // 2])
    assert (
        main(["kvasir", "--manifest", str(mf), "--cache", str(spaced), "--quiet", "--from", str(mine)]) == 1
    )
    err = _one_line_error(capsys)
    command = err.split("then run ", 1)[1].split(". ", 1)[0].removesuffix(".")
    args = build_parser().parse_args(shlex.split(command)[3:])
    assert args.names == ["kvasir"] and args.cache == spaced and args.sources == [mine]


# ------------------------------------------------------------------------------------------------------------------
# 10. A "verified" stamp does not outlive the checksum it was checked against


def test_a_stamp_counts_only_while_the_recorded_checksum_is_the_same(cache: Path) -> None:
    cache.mkdir()
    f = cache / "x.zip"
    f.write_bytes(b"PK\x03\x04" + b"a" * 100)
    spec = FileSpec(name="x.zip")
    state = State(cache)
    verify_file(f, spec, item="it", state=state, origin="test", log=lambda s: None)
    state.record("it", "x.zip", Digests(size=104, sha256="0" * 64), "another copy")
    with pytest.raises(ChecksumError, match="recorded"):  # the stamp does not vouch for it any more
        verify_file(f, spec, item="it", state=state, origin="test", use_stamp=True, log=lambda s: None)
    assert state.stamped(f, spec, "it") is None
    state.forget("it")
    assert state.stamped(f, spec, "it") is None  # nothing recorded: it must be checked (and recorded) again


def test_forgetting_a_record_drops_the_stamps_the_library_reads(cache: Path, monkeypatch) -> None:
    from opticam_lib.paths import ENV_VAR, verification_problem

    monkeypatch.setenv(ENV_VAR, str(cache))
    (cache / "weights").mkdir(parents=True)
    f, other = cache / "weights" / "x.bin", cache / "weights" / "y.bin"
    f.write_bytes(b"a" * 100)
    other.write_bytes(b"b" * 100)
    state = State(cache)
    verify_file(f, FileSpec(name="x.bin"), item="it", state=state, origin="test", log=lambda s: None)
    verify_file(other, FileSpec(name="y.bin"), item="another", state=state, origin="test", log=lambda s: None)
    assert verification_problem(f) is None and verification_problem(other) is None
    assert state.forget("it") == ["it/x.bin"]
    assert verification_problem(f) == "data_download has not verified it (copied by hand?)"
    assert verification_problem(other) is None  # another item's stamp stays


# ------------------------------------------------------------------------------------------------------------------
# 11. Archive members: a duplicate is counted once; a name with a trailing blank is refused


def test_a_duplicate_imagenette_member_is_counted_once(server: _Server, cache: Path) -> None:
    archive = _tar_bytes({"i/val/n01440764/a.JPEG": b"first", "j/val/n01440764/a.JPEG": b"second"})
    server.files["/i.tgz"] = archive
    m = _manifest(imagenette=_dataset_item("imagenette", "i.tgz", server.url("/i.tgz"), archive))
    folder = fetch_item("imagenette", manifest=m, cache=cache, **QUIET)
    assert [r["file"] for r in _rows(folder / "labels.csv")] == ["n01440764/a.JPEG"]
    assert (folder / "n01440764" / "a.JPEG").read_bytes() == b"first"


@pytest.mark.parametrize("name", ["a.JPEG ", "a.JPEG.", " a.JPEG"])
def test_a_member_name_with_a_trailing_blank_or_dot_is_refused(
    server: _Server, cache: Path, name: str
) -> None:
    archive = _tar_bytes({"i/val/n01440764/a.JPEG": b"x", f"i/val/n01440764/{name}": b"y"})
    server.files["/i.tgz"] = archive
    m = _manifest(imagenette=_dataset_item("imagenette", "i.tgz", server.url("/i.tgz"), archive))
    with pytest.raises(DataDownloadError, match="unusual file name"):
        fetch_item("imagenette", manifest=m, cache=cache, **QUIET)
    assert not (cache / "datasets" / "imagenette").exists()


# ------------------------------------------------------------------------------------------------------------------
# 12. An option that would be ignored is refused


@pytest.mark.parametrize(
    "argv",
    [
        ["LIST", "--from", "/nowhere"],
        ["LIST", "--force"],
        ["LIST", "--keep-archive"],
        ["LIST", "--forget-recorded"],
        ["LIST", "--subset", "5"],
        ["LIST", "--timeout", "5"],
        ["--force"],
        ["resnet50", "--verify"],
        ["resnet50", "--keep-archive"],
        ["kvasir", "--subset", "5"],
        ["kvasir", "--subset", "1000"],
        ["imagenet-val", "--keep-archive"],
    ],
)
def test_an_option_that_would_be_ignored_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    _one_line_error(capsys)


def test_options_that_apply_to_one_of_the_items_are_accepted() -> None:
    p = build_parser()
    for argv in (["resnet50", "kvasir", "--keep-archive"], ["kvasir", "imagenet-val", "--subset", "5"]):
        args = p.parse_args(argv)
        assert cli._check_args(p, args, load_manifest()) == argv[:2]


# ------------------------------------------------------------------------------------------------------------------
# 13. Wording: a closed pipe is not a cache problem; the help says what is checked and what LIST --verify writes


class _ClosedPipe:
    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_list_into_a_closed_pipe_is_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mf = _write_manifest(tmp_path / "m.json", {"tiny": _weights_item("https://example.org/t.bin", BLOB)})
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["LIST", "--manifest", str(mf)]) == 0
    assert capsys.readouterr().err == ""


def test_the_help_is_honest_about_from_and_list_verify(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Every file is checked" not in text
    assert "--from folder, or an archive under another name, cannot be checked" in text
    verify = text.split("options:", 1)[1].split("--verify", 1)[1].split("--timeout", 1)[0]
    assert "recorded" in verify and "stamps" in verify
