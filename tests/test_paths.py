"""The one check that an output folder or file takes files (used by the CLI and the channel-weight cache), and the
one way the package writes a file (``atomic_write``: the old file or the whole new one)."""

from __future__ import annotations

import pytest

from opticam_lib.errors import InputError
from opticam_lib.paths import atomic_write, writable_dir, writable_file


def test_writable_dir_creates_the_folder_and_leaves_no_probe(tmp_path):
    out = writable_dir(tmp_path / "a" / "b", "--out")
    assert out.is_dir() and list(out.iterdir()) == []


def test_writable_dir_below_a_file_names_the_path_and_the_option(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match=r"cannot write to .*afile.*--out"):
        writable_dir(tmp_path / "afile" / "sub", "--out")


def test_writable_file_refuses_a_folder_with_an_example_path(tmp_path):
    with pytest.raises(InputError, match=r"--json .* is a folder; give a file path, e.g. .*table1\.json"):
        writable_file(tmp_path, "--json", "table1.json")


def test_writable_file_creates_its_folder_and_writes_nothing(tmp_path):
    path = writable_file(tmp_path / "new" / "t.json", "--json", "t.json")
    assert path.parent.is_dir() and not path.exists() and list(path.parent.iterdir()) == []


def test_writable_file_refuses_a_read_only_file(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    target.write_text("{}")
    monkeypatch.setattr("opticam_lib.paths.os.access", lambda p, mode: False)  # root can write anything
    with pytest.raises(InputError, match=r"cannot write to .*t\.json: permission denied.*--json"):
        writable_file(target, "--json", "t.json")


def test_atomic_write_writes_text_bytes_and_through_a_function(tmp_path):
    import torch

    assert atomic_write(tmp_path / "a.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "c.pt", lambda p: torch.save({"w": torch.ones(2)}, p))
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.pt"]  # no temporary file left


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_keeps_the_old_file_whole(tmp_path, failure):
    """A full disk or Ctrl-C halfway through: the old file is untouched and no temporary file stays."""
    path = tmp_path / "table.json"
    path.write_text('{"good": true}')

    def half_then_fail(tmp):
        tmp.write_text('{"go')
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(path, half_then_fail)
    assert path.read_text() == '{"good": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]
