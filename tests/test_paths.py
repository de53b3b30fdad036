"""The one check that an output folder or file takes files (used by the CLI and the channel-weight cache)."""

from __future__ import annotations

import pytest

from opticam_lib.errors import InputError
from opticam_lib.paths import writable_dir, writable_file


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
