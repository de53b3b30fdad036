"""data_download against a local HTTP server on 127.0.0.1: never the real network, never the user's cache.

Every test gets its own cache folder (``OPTICAM_CACHE`` points into ``tmp_path``), a server on a random port that
serves fixture bytes (with or without HTTP Range support), and a manifest written for the test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import data_download
from data_download import (
    ChecksumError,
    DamagedArchiveError,
    FileFormatError,
    HTTPDownloadError,
    ManifestError,
    ManualStepRequired,
    OfflineError,
    WrongArchiveError,
    fetch_item,
    format_list,
    imagenet_subset_ids,
    item_status,
    load_manifest,
    parse_manifest,
)
from data_download.__main__ import main
from data_download.core import _item_lock
from data_download.datasets import KVASIR_CLASSES
from data_download.fetch import State, format_problem, validator_path

# ------------------------------------------------------------------------------------------------------------------
# Fixtures: an HTTP server and an isolated cache


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.ranges = True  # honour Range requests
        # path -> drop the connection after this many bytes (first request only)
        self.cut_once: dict[str, int] = {}
        # path -> answer 302 to this path (as the Hugging Face Hub does to its CDN)
        self.redirects: dict[str, str] = {}
        self.etags: dict[str, str] = {}  # path -> ETag sent with the file
        self.if_range = True  # honour If-Range (a validator that no longer matches gets the whole file)
        self.no_length: set[str] = set()  # paths answered without Content-Length (end = connection closed)
        self.trickle: set[str] = set()  # paths sent 1 KiB at a time, 20 ms apart
        self.redirect_to: dict[str, str] = {}  # path -> an absolute address to redirect to
        self.content_types: dict[str, str] = {}  # path -> Content-Type sent with the file (none by default)
        self.requests: list[dict[str, Any]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def sent(self, path: str) -> int:
        """Bytes of body sent for ``path`` over all requests."""
        return sum(r["sent"] for r in self.requests if r["path"] == path)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        record: dict[str, Any] = {
            "path": self.path,
            "range": self.headers.get("Range"),
            "if_range": self.headers.get("If-Range"),
            "sent": 0,
        }
        self.server.requests.append(record)
        if self.path in self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.url(self.server.redirects[self.path]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        etag = self.server.etags.get(self.path)
        stale = self.headers.get("If-Range") is not None and self.headers.get("If-Range") != etag
        if rng and self.server.ranges and not (stale and self.server.if_range):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if etag:
            self.send_header("ETag", etag)
        if self.path in self.server.content_types:
            self.send_header("Content-Type", self.server.content_types[self.path])
        if self.path in self.server.no_length:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = self.server.cut_once.pop(self.path, None)
        if cut is not None:
            payload = payload[:cut]
            self.close_connection = True
        if self.path in self.server.trickle:
            try:
                for i in range(0, len(payload), 1024):
                    self.wfile.write(payload[i : i + 1024])
                    self.wfile.flush()
                    record["sent"] += len(payload[i : i + 1024])
                    time.sleep(0.02)
            except OSError:  # the client gave up
                pass
            return
        self.wfile.write(payload)
        record["sent"] = len(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own cache folder; $OPTICAM_CACHE points to it so the user's cache is never touched."""
    c = tmp_path / "cache"
    monkeypatch.setenv("OPTICAM_CACHE", str(c))
    return c


def _closed_port_url(path: str = "/file.bin") -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    return f"http://127.0.0.1:{port}{path}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights_item(
    url: str | list[str], data: bytes | None, *, sha256: str | None = "auto", size: Any = "auto"
) -> dict:
    urls = url if isinstance(url, list) else [url]
    return {
        "kind": "weights",
        "target": "weights/tiny.bin",
        "title": "a tiny weights file",
        "licence": "MIT",
        "source": "the test server",
        "files": [
            {
                "name": "tiny.bin",
                "urls": urls,
                "size": len(data)
                if size == "auto" and data is not None
                else (None if size == "auto" else size),
                "sha256": _sha256(data)
                if sha256 == "auto" and data is not None
                else (None if sha256 == "auto" else sha256),
            }
        ],
    }


def _manifest(**items: dict) -> data_download.Manifest:
    return parse_manifest({"items": {k.replace("_", "-"): v for k, v in items.items()}})


BLOB = bytes(range(256)) * 1024  # 256 KiB


# ------------------------------------------------------------------------------------------------------------------
# Downloads


def test_download_puts_verified_file_in_place(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert path == cache / "weights" / "tiny.bin"
    assert path.read_bytes() == BLOB
    assert not path.with_name("tiny.bin.part").exists()
    assert item_status(m.get("tiny"), cache).state == "verified"
    # already in place: verified again, not downloaded again
    n = len(server.requests)
    assert fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None) == path
    assert len(server.requests) == n


def test_resume_requests_only_the_rest(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    part = cache / "weights" / "tiny.bin.part"
    part.parent.mkdir(parents=True)
    half = len(BLOB) // 2
    part.write_bytes(BLOB[:half])  # an earlier, interrupted download
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert path.read_bytes() == BLOB
    assert [r["range"] for r in server.requests] == [f"bytes={half}-"]
    assert server.sent("/tiny.bin") == len(BLOB) - half
    assert not part.exists()


def test_dropped_connection_is_resumed(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    server.cut_once["/tiny.bin"] = 100_000
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    logs: list[str] = []
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=logs.append)
    assert path.read_bytes() == BLOB
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-"]
    assert any("resuming" in line for line in logs)


def test_resume_follows_redirects_with_the_range(server: _Server, cache: Path) -> None:
    server.files["/cdn/tiny.bin"] = BLOB
    server.redirects["/resolve/main/tiny.bin"] = "/cdn/tiny.bin"
    m = _manifest(tiny=_weights_item(server.url("/resolve/main/tiny.bin"), BLOB))
    part = cache / "weights" / "tiny.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BLOB[:1000])
    # with progress bars
    path = fetch_item("tiny", manifest=m, cache=cache, progress=True, log=lambda s: None)
    assert path.read_bytes() == BLOB
    assert [(r["path"], r["range"]) for r in server.requests] == [
        ("/resolve/main/tiny.bin", "bytes=1000-"),
        ("/cdn/tiny.bin", "bytes=1000-"),
    ]


def test_complete_part_of_unknown_size_is_verified_not_downloaded_again(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    server.etags["/tiny.bin"] = '"v1"'
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, sha256=None, size=None))
    part = cache / "weights" / "tiny.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BLOB)  # downloaded completely, then interrupted before the check
    validator_path(part).write_text(json.dumps({"etag": '"v1"', "last_modified": ""}))
    assert (
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None).read_bytes() == BLOB
    )
    assert [r["range"] for r in server.requests] == [f"bytes={len(BLOB)}-"]  # answered 416: nothing left
    assert server.requests[0]["if_range"] == '"v1"'
    assert server.sent("/tiny.bin") == 0
    assert not validator_path(part).exists()


@pytest.mark.parametrize("if_range", [True, False])
def test_a_file_changed_upstream_is_not_stitched_to_an_old_part(
    server: _Server, cache: Path, if_range: bool
) -> None:
    """No published checksum: the old part's start must not be joined to the new file's end and recorded."""
    old, new = BLOB, BLOB[::-1]
    server.files["/tiny.bin"] = new
    server.etags["/tiny.bin"] = '"v2"'
    server.if_range = if_range  # False: a server that ignores If-Range and answers 206 with its new ETag
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), None, sha256=None, size=None))
    part = cache / "weights" / "tiny.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(old[:100_000])
    validator_path(part).write_text(json.dumps({"etag": '"v1"', "last_modified": ""}))
    logs: list[str] = []
    got = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=logs.append).read_bytes()
    assert got == new  # the whole new file, not old[:100000] + new[100000:]
    assert State(cache).recorded("tiny", "tiny.bin")["sha256"] == _sha256(new)
    assert server.requests[0]["if_range"] == '"v1"'
    assert any("again" in line for line in logs)


def test_a_part_without_validator_and_without_checksum_starts_again(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB  # no ETag, no Last-Modified
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), None, sha256=None, size=None))
    part = cache / "weights" / "tiny.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BLOB[::-1][:1000])  # from an unknown earlier download
    logs: list[str] = []
    assert fetch_item("tiny", manifest=m, cache=cache, progress=False, log=logs.append).read_bytes() == BLOB
    assert server.requests[0]["range"] is None  # not resumed
    assert any("cannot be resumed safely" in line for line in logs)


def test_unknown_length_without_checksum_is_refused(server: _Server, cache: Path) -> None:
    """A connection closed early with no Content-Length looks like a complete file: refuse, keep nothing."""
    server.files["/tiny.bin"] = BLOB
    server.no_length.add("/tiny.bin")
    server.cut_once["/tiny.bin"] = 50_000
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), None, sha256=None, size=None))
    with pytest.raises(data_download.DataDownloadError, match="does not say how long"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert State(cache).recorded("tiny", "tiny.bin") is None
    assert not list((cache / "weights").glob("tiny.bin*"))
    # with a published checksum the same server is fine: the check catches a short file
    server.cut_once.clear()
    m2 = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, size=None))
    assert (
        fetch_item("tiny", manifest=m2, cache=cache, progress=False, log=lambda s: None).read_bytes() == BLOB
    )


def test_forget_recorded_accepts_a_file_that_changed_upstream(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), None, sha256=None, size=None))
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    server.files["/tiny.bin"] = BLOB[::-1]
    with pytest.raises(ChecksumError, match="--forget-recorded"):
        fetch_item("tiny", manifest=m, cache=cache, force=True, progress=False, log=lambda s: None)
    path = fetch_item(
        "tiny", manifest=m, cache=cache, force=True, forget_recorded=True, progress=False, log=lambda s: None
    )
    assert path.read_bytes() == BLOB[::-1]
    assert State(cache).recorded("tiny", "tiny.bin")["sha256"] == _sha256(BLOB[::-1])


def test_the_forget_recorded_command_names_a_cache_that_is_not_the_default(
    server: _Server, tmp_path: Path
) -> None:
    """Followed literally, the advice must clear the record in the cache that holds it, not the default one."""
    other = tmp_path / "elsewhere"
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), None, sha256=None, size=None))
    fetch_item("tiny", manifest=m, cache=other, progress=False, log=lambda s: None)
    server.files["/tiny.bin"] = BLOB[::-1]
    with pytest.raises(ChecksumError) as err:
        fetch_item("tiny", manifest=m, cache=other, force=True, progress=False, log=lambda s: None)
    assert f"python -m data_download tiny --cache {other} --forget-recorded" in str(err.value)


def test_a_trickling_server_meets_the_deadline_and_the_part_is_kept(
    server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/tiny.bin"] = BLOB
    server.trickle.add("/tiny.bin")  # 256 KiB at about 50 KiB/s: about 5 s
    monkeypatch.setattr(data_download.fetch, "deadline_for", lambda spec: 0.5)
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    t0 = time.monotonic()
    with pytest.raises(data_download.DataDownloadError, match="took longer than"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert time.monotonic() - t0 < 3
    part = cache / "weights" / "tiny.bin.part"
    assert 0 < part.stat().st_size < len(BLOB)  # kept for a resume
    assert not (cache / "weights" / "tiny.bin").exists()


def test_redirects_and_addresses_outside_https_are_refused(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    server.redirect_to["/moved.bin"] = "ftp://127.0.0.1/tiny.bin"
    m = _manifest(tiny=_weights_item(server.url("/moved.bin"), BLOB))
    with pytest.raises(data_download.HTTPDownloadError, match="not an https:// address: refused"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    for bad in ("file:///etc/passwd", "ftp://example.org/x.bin", "http://example.org/x.bin"):
        with pytest.raises(data_download.ManifestError, match="not an https:// address"):
            _manifest(tiny=_weights_item(bad, BLOB))
    _manifest(tiny=_weights_item("https://example.org/x.bin", BLOB))  # https is fine


def test_the_final_address_after_a_redirect_is_recorded(server: _Server, cache: Path) -> None:
    server.files["/cdn/tiny.bin"] = BLOB
    server.redirects["/tiny.bin"] = "/cdn/tiny.bin"
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), None, sha256=None, size=None))
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert (
        "redirected to " + server.url("/cdn/tiny.bin") in State(cache).recorded("tiny", "tiny.bin")["origin"]
    )


def test_a_corrupt_state_file_is_kept_aside(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = State(cache)
    state.dir.mkdir(parents=True)
    state.path.write_text("{ not json")
    assert state.recorded("tiny", "tiny.bin") is None
    backups = list(state.dir.glob("state.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{ not json"
    assert "moved to" in capsys.readouterr().err


def test_a_second_process_on_the_same_file_is_refused(cache: Path) -> None:
    state = State(cache)
    with state.lock(cache / "weights" / "x.bin"):
        with pytest.raises(data_download.DataDownloadError, match="another data_download process"):
            with state.lock(cache / "weights" / "x.bin"):
                pass
    with state.lock(cache / "weights" / "x.bin"):  # released
        pass


def test_a_lock_is_the_same_for_a_relative_and_an_absolute_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes given the same cache as ``cache`` and as ``/abs/cache`` must not write the same .part."""
    monkeypatch.chdir(tmp_path)
    state = State(Path("cache"))
    with state.lock(Path("cache") / "weights" / "x.bin"):
        with pytest.raises(data_download.DataDownloadError, match="another data_download process"):
            with state.lock(tmp_path / "cache" / "weights" / "x.bin"):
                pass
    item = load_manifest().get("kvasir")
    with state.lock(_item_lock(item, Path("cache"))):
        with pytest.raises(data_download.DataDownloadError, match="another data_download process"):
            with State(tmp_path / "cache").lock(_item_lock(item, tmp_path / "cache")):
                pass


def test_server_without_range_support_starts_again(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    server.ranges = False
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    part = cache / "weights" / "tiny.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # not even the right bytes: must be overwritten, not appended to
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert path.read_bytes() == BLOB


def test_bad_checksum_is_refused_and_nothing_is_kept(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, sha256="0" * 64))
    with pytest.raises(ChecksumError, match="SHA-256") as err:
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert "nothing was put in place" in str(err.value)
    assert not (cache / "weights" / "tiny.bin").exists()
    assert not (cache / "weights" / "tiny.bin.part").exists()


def test_wrong_size_on_the_server_fails_before_downloading(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, size=len(BLOB) + 1))
    with pytest.raises(ChecksumError, match="offers"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert not list((cache / "weights").iterdir())  # no .part, no file


def test_missing_file_404_is_a_clear_error(server: _Server, cache: Path) -> None:
    m = _manifest(tiny=_weights_item(server.url("/gone.bin"), BLOB))
    with pytest.raises(HTTPDownloadError) as err:
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    text = str(err.value)
    assert "HTTP 404" in text and server.url("/gone.bin") in text
    assert str(cache / "weights" / "tiny.bin") in text  # where to put a hand copy
    assert not (cache / "weights" / "tiny.bin.part").exists()


def test_next_mirror_is_tried(server: _Server, cache: Path) -> None:
    server.files["/mirror/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item([server.url("/gone.bin"), server.url("/mirror/tiny.bin")], BLOB))
    assert (
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None).read_bytes() == BLOB
    )


def test_no_network_fails_fast_and_says_how_to_copy_by_hand(cache: Path) -> None:
    m = _manifest(tiny=_weights_item(_closed_port_url(), BLOB))
    t0 = time.monotonic()
    with pytest.raises(OfflineError) as err:
        fetch_item("tiny", manifest=m, cache=cache, timeout=2, progress=False, log=lambda s: None)
    assert time.monotonic() - t0 < 5
    text = str(err.value)
    assert "connection refused" in text
    assert "copy it to" in text and str(cache / "weights" / "tiny.bin") in text
    assert "run the same command again" in text and "python -m data_download tiny" in text


def test_hand_copied_file_is_verified_without_network(cache: Path) -> None:
    m = _manifest(tiny=_weights_item(_closed_port_url(), BLOB))
    dest = cache / "weights" / "tiny.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(BLOB)
    assert fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None) == dest
    assert item_status(m.get("tiny"), cache).state == "verified"


def test_bad_hand_copied_file_is_moved_aside(cache: Path) -> None:
    m = _manifest(tiny=_weights_item(_closed_port_url(), BLOB))
    dest = cache / "weights" / "tiny.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(BLOB[:-1] + b"!")
    with pytest.raises(ChecksumError, match="moved aside"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert not dest.exists() and dest.with_name("tiny.bin.corrupt").exists()


def test_from_path_installs_a_verified_copy(tmp_path: Path, cache: Path) -> None:
    m = _manifest(tiny=_weights_item(_closed_port_url(), BLOB))
    src = tmp_path / "downloaded-elsewhere.bin"
    src.write_bytes(BLOB)
    path = fetch_item("tiny", manifest=m, cache=cache, sources=[src], progress=False, log=lambda s: None)
    assert path.read_bytes() == BLOB and src.exists()
    src.write_bytes(b"not it")
    with pytest.raises(ChecksumError):
        fetch_item("tiny", manifest=m, cache=cache, sources=[src], progress=False, log=lambda s: None)
    assert path.read_bytes() == BLOB  # the good copy stays


def test_an_interrupted_copy_leaves_nothing_that_a_later_download_would_resume(
    server: _Server, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --from copy cut short (Ctrl-C, a full disk) must not become the start of the next download's resume:
    without a published checksum, the user's bytes joined to the server's would be recorded as trusted."""
    import data_download.fetch as fetch

    server.files["/tiny.bin"] = BLOB
    server.etags["/tiny.bin"] = '"v1"'
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, sha256=None, size=None))
    weights = cache / "weights"
    weights.mkdir(parents=True)
    (weights / "tiny.bin.part").write_bytes(BLOB[:1000])  # an earlier, interrupted download
    validator_path(weights / "tiny.bin.part").write_text('"v1"')
    other = tmp_path / "other.bin"
    other.write_bytes(bytes(reversed(BLOB)))

    def half_then_interrupt(fin, fout, total, desc, progress):
        fout.write(fin.read(total // 2))
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "_copy", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch_item("tiny", manifest=m, cache=cache, sources=[other], progress=False, log=lambda s: None)
    assert sorted(p.name for p in weights.iterdir()) == ["tiny.bin.part", "tiny.bin.part.validator"]
    assert (weights / "tiny.bin.part").read_bytes() == BLOB[:1000]  # the download's own part, untouched
    monkeypatch.undo()

    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert path.read_bytes() == BLOB  # resumed from the download's bytes, not the copy's
    assert State(cache).recorded("tiny", "tiny.bin")["sha256"] == _sha256(BLOB)


def test_a_finished_copy_supersedes_a_partial_download(tmp_path: Path, cache: Path) -> None:
    m = _manifest(tiny=_weights_item(_closed_port_url(), BLOB))
    weights = cache / "weights"
    weights.mkdir(parents=True)
    (weights / "tiny.bin.part").write_bytes(b"stale bytes from another file")
    validator_path(weights / "tiny.bin.part").write_text('"old"')
    src = tmp_path / "tiny.bin"
    src.write_bytes(BLOB)
    fetch_item("tiny", manifest=m, cache=cache, sources=[src], progress=False, log=lambda s: None)
    assert [p.name for p in weights.iterdir()] == ["tiny.bin"]  # no .part, no validator, no temporary file


def test_a_truncated_safetensors_download_is_refused_and_not_recorded(server: _Server, cache: Path) -> None:
    """The right format, the right header, half the data: refused like any file of the wrong kind."""
    whole = _safetensors(b"\7" * 20_000)
    server.files["/model.safetensors"] = whole[: len(whole) // 2]  # served with a consistent Content-Length
    m = _manifest(tiny=_safetensors_item([server.url("/model.safetensors")]))
    with pytest.raises(FileFormatError, match="truncated or padded"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    _nothing_kept(cache, "tiny", "model.safetensors")
    server.files["/model.safetensors"] = whole  # the whole file is then accepted and recorded
    assert (
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None).read_bytes() == whole
    )


def test_unpublished_checksum_is_recorded_on_first_download(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, sha256=None, size=None))
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    recorded = State(cache).recorded("tiny", "tiny.bin")
    assert recorded is not None and recorded["sha256"] == _sha256(BLOB) and recorded["size"] == len(BLOB)
    assert "recorded" in format_list(m, cache)
    server.files["/tiny.bin"] = BLOB[::-1]  # the file changes upstream: a later download is refused
    with pytest.raises(ChecksumError, match="recorded"):
        fetch_item("tiny", manifest=m, cache=cache, force=True, progress=False, log=lambda s: None)
    assert (cache / "weights" / "tiny.bin").read_bytes() == BLOB


# ------------------------------------------------------------------------------------------------------------------
# An HTML page, or a file of the wrong kind, is never accepted nor recorded

HTML_PAGE = b"\n  <!DOCTYPE html>\n<html><body>Please sign in</body></html>\n"


def _safetensors(payload: bytes = b"\0" * 64) -> bytes:
    """A whole safetensors file: one uint8 tensor whose data is ``payload`` (the format needs it fully covered)."""
    header = json.dumps(
        {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}, "__metadata__": {}}
    ).encode()
    return len(header).to_bytes(8, "little") + header + payload


def _safetensors_item(urls: list[str]) -> dict:
    """Like vit_b_16 in the shipped manifest: no published size or checksum."""
    item = _weights_item(urls, None, sha256=None, size=None)
    item["target"] = "weights/model.safetensors"
    item["files"][0]["name"] = "model.safetensors"
    return item


def _nothing_kept(cache: Path, item: str, name: str) -> None:
    """No checksum recorded for ``name``, and neither the file nor its ``.part`` in the cache's weights folder."""
    assert State(cache).recorded(item, name) is None
    assert not list(cache.glob(f"weights/{name}*"))


def test_an_html_page_sent_as_text_html_is_refused_and_the_next_mirror_is_tried(
    server: _Server, cache: Path
) -> None:
    server.files["/login"] = HTML_PAGE
    server.content_types["/login"] = "text/html; charset=utf-8"
    m = _manifest(tiny=_safetensors_item([server.url("/login")]))
    with pytest.raises(HTTPDownloadError, match=r"sent an HTML page .* instead of model\.safetensors"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    _nothing_kept(cache, "tiny", "model.safetensors")
    good = _safetensors()
    server.files["/mirror/model.safetensors"] = good
    m = _manifest(tiny=_safetensors_item([server.url("/login"), server.url("/mirror/model.safetensors")]))
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert path.read_bytes() == good
    assert State(cache).recorded("tiny", "model.safetensors")["sha256"] == _sha256(good)


def test_the_library_uses_a_weight_file_only_as_data_download_verified_it(
    server: _Server, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library reads data_download's "verified" stamps itself (it does not import data_download): a file
    fetched and verified passes; one copied in by hand, or changed after, is refused with the command."""
    from opticam_lib import paths
    from opticam_lib.errors import MissingWeightsError
    from opticam_lib.models import registry

    good = _safetensors()
    server.files["/model.safetensors"] = good
    m = _manifest(tiny=_safetensors_item([server.url("/model.safetensors")]))
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert paths.verification_problem(path) is None
    os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 10**9))  # touched (or rewritten) since
    assert paths.verification_problem(path) == "it changed after data_download verified it"
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)  # checked again: stamped
    assert paths.verification_problem(path) is None
    # a registered model whose file has no checksum in its name: refused until data_download has checked it
    vit = registry.weights_path("vit_b_16")
    vit.write_bytes(good)
    with pytest.raises(
        MissingWeightsError, match=r"data_download has not verified it .*python -m data_download vit_b_16"
    ):
        registry.require_weights("vit_b_16")
    from opticam_lib.__main__ import main as opticam_main

    assert opticam_main(["models"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "unverified: python -m data_download vit_b_16" in listed["vit_b_16"]
    assert "missing: python -m data_download deit_b_16" in listed["deit_b_16"]
    (cache / ".data_download" / "state.json").write_text("{not json")
    with pytest.raises(MissingWeightsError, match=r"state\.json, cannot be read"):
        registry.require_weights("vit_b_16")
    assert paths.verification_problem(cache.parent / "elsewhere.bin").startswith(
        "it is not in the cache folder"
    )


def test_a_file_rewritten_in_place_with_its_times_restored_is_not_the_verified_one(
    server: _Server, cache: Path
) -> None:
    """``cp -p`` over a verified file of the same size keeps its inode, size and mtime; its change time moves,
    and both the library and data_download see it. A stamp written before ctime_ns was recorded still counts."""
    from opticam_lib import paths

    good = _safetensors()
    server.files["/model.safetensors"] = good
    m = _manifest(tiny=_safetensors_item([server.url("/model.safetensors")]))
    path = fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    state = json.loads((cache / ".data_download" / "state.json").read_text())
    key = path.relative_to(cache).as_posix()
    assert paths.verification_problem(path) is None and State(cache).stamped(path) is not None
    before = path.stat()
    time.sleep(0.05)  # file times tick with the kernel's clock, a few milliseconds apart
    with open(path, "r+b") as f:  # what cp -p does to an existing file: same inode, new bytes, old times
        f.write(bytes(b ^ 0xFF for b in good[:16]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert paths.verification_problem(path) == "it changed after data_download verified it"
    assert State(cache).stamped(path) is None
    # an older stamp, without ctime_ns, is judged on size and mtime as before (no forced re-verification)
    full = json.dumps(state)
    del state["verified"][key]["ctime_ns"]
    (cache / ".data_download" / "state.json").write_text(json.dumps(state))
    assert paths.verification_problem(path) is None and State(cache).stamped(path) is not None
    # with the full stamp back, data_download checks the file again, sets it aside, and the next run fetches it
    (cache / ".data_download" / "state.json").write_text(full)
    with pytest.raises(FileFormatError, match="moved aside"):
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert path.read_bytes() == good and paths.verification_problem(path) is None


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("model.safetensors", HTML_PAGE),
        ("tiny.bin", HTML_PAGE),  # an unknown suffix: only the HTML check
        ("model.safetensors", b"\x10\0\0\0\0\0\0\0not json at all"),
        ("resnet-0123.pth", b"garbage, not a zip nor a pickle"),
    ],
)
def test_a_download_of_the_wrong_kind_is_refused_and_not_recorded(
    server: _Server, cache: Path, name: str, body: bytes
) -> None:
    server.files["/f"] = body  # no Content-Type: only the content tells
    item = _weights_item(server.url("/f"), None, sha256=None, size=None)
    item["target"], item["files"][0]["name"] = f"weights/{name}", name
    m = _manifest(tiny=item)
    with pytest.raises(FileFormatError, match=f"not the expected file {name}") as err:
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert "nothing was put in place" in str(err.value) and "--from PATH" in str(err.value)
    _nothing_kept(cache, "tiny", name)


def test_a_hand_copy_of_the_wrong_kind_is_refused_and_not_recorded(tmp_path: Path, cache: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(HTML_PAGE)
    m = _manifest(tiny=_safetensors_item([_closed_port_url()]))
    with pytest.raises(FileFormatError, match="HTML page"):
        fetch_item("tiny", manifest=m, cache=cache, sources=[weights], progress=False, log=lambda s: None)
    _nothing_kept(cache, "tiny", "model.safetensors")
    assert weights.read_bytes() == HTML_PAGE  # the user's file is left alone

    archive = tmp_path / "kvasir-dataset-v2.zip"
    archive.write_bytes(HTML_PAGE)
    m = _manifest(kvasir=_dataset_item("kvasir", archive.name, None, None, manual=True))
    with pytest.raises(FileFormatError, match="HTML page"):
        fetch_item("kvasir", manifest=m, cache=cache, sources=[archive], progress=False, log=lambda s: None)
    assert State(cache).recorded("kvasir", archive.name) is None
    assert archive.exists() and not (cache / "datasets" / "kvasir").exists()


def test_an_html_page_recorded_by_an_older_version_is_set_aside_and_its_record_forgotten(
    server: _Server, cache: Path
) -> None:
    m = _manifest(tiny=_safetensors_item([server.url("/model.safetensors")]))
    dest = cache / "weights" / "model.safetensors"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(HTML_PAGE)  # what the version without the check installed and recorded
    State(cache).record("tiny", "model.safetensors", data_download.hash_file(dest), "an old download")
    with pytest.raises(FileFormatError, match="it was forgotten") as err:
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert "moved aside" in str(err.value) and not dest.exists()
    assert State(cache).recorded("tiny", "model.safetensors") is None
    server.files["/model.safetensors"] = good = _safetensors()
    assert (
        fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None).read_bytes() == good
    )


def test_format_problem_by_file_name(tmp_path: Path) -> None:
    def problem(name: str, data: bytes) -> str | None:
        path = tmp_path / "f.part"
        path.write_bytes(data)
        return format_problem(path, name)

    tar = _tar_bytes({"a.txt": b"a"}, mode="w")
    good = {
        "model.safetensors": _safetensors(),
        "a.zip": _zip_bytes({"a.txt": b"a"}),
        "r.pth": _zip_bytes({"archive/data.pkl": b"x"}),
        "legacy.pt": b"\x80\x02legacy pickle",
        "a.tar": tar,
        "a.tar.gz": _tar_bytes({"a.txt": b"a"}),
        "a.TGZ": _tar_bytes({"a.txt": b"a"}),
        "a.tar.xz": _tar_bytes({"a.txt": b"a"}, mode="w:xz"),
        "a.tar.bz2": _tar_bytes({"a.txt": b"a"}, mode="w:bz2"),
        "notes.csv": b"ImageId,PredictionString\n",
        "page.html": HTML_PAGE,
    }
    for name, data in good.items():
        assert problem(name, data) is None, name
    for name in [*good, "x.bin", "x.csv"]:
        if not name.endswith(".html"):
            assert "HTML page" in str(problem(name, HTML_PAGE)), name
    assert "HTML page" in str(problem("x.bin", b"\xef\xbb\xbf<HTML><body>error</body></HTML>"))
    assert "safetensors header" in str(problem("model.safetensors", (10**9).to_bytes(8, "little") + b"{}"))
    assert "too short" in str(problem("model.safetensors", b"{}"))
    whole = _safetensors(b"\1" * 1000)
    assert "truncated or padded" in str(problem("model.safetensors", whole[:-400]))
    assert "truncated or padded" in str(problem("model.safetensors", whole + b"\0"))
    assert "header cannot be read" in str(problem("model.safetensors", b"\x04\0\0\0\0\0\0\0{x}!"))
    assert "not a zip archive" in str(problem("a.zip", tar))
    assert "not a PyTorch checkpoint" in str(problem("r.pth", b"random bytes"))
    assert "not a tar archive" in str(problem("a.tar", b"x" * 600))
    assert "not a gzip file" in str(problem("a.tgz", tar))
    assert "not an xz file" in str(problem("a.tar.xz", tar))
    assert "not a bzip2 file" in str(problem("a.tar.bz2", tar))
    assert problem("x.bin", b"\0" * 10) is None


# ------------------------------------------------------------------------------------------------------------------
# A damaged archive: one clear error, and its first-use checksum does not block a good copy


def _kvasir_tgz(n: int = 4) -> bytes:
    return _tar_bytes(
        {
            f"kvasir-dataset-v2/{c}/{c}-{i}.jpg": bytes(range(256)) * 40
            for c in KVASIR_CLASSES
            for i in range(n)
        }
    )


def test_a_truncated_archive_from_the_user_is_a_clear_error_and_its_record_is_forgotten(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = _kvasir_tgz()
    mf = _write_manifest(
        tmp_path / "m.json", {"kvasir": _dataset_item("kvasir", "kvasir.tgz", None, None, manual=True)}
    )
    mine = tmp_path / "kvasir.tgz"
    mine.write_bytes(full[: len(full) // 2])
    argv = ["kvasir", "--manifest", str(mf), "--cache", str(cache), "--quiet", "--from", str(mine)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{mine} is damaged or incomplete (" in err and "delete it and download it again" in err
    assert f"--from {mine}" in err and "was forgotten" in err and "Traceback" not in err
    assert State(cache).recorded("kvasir", "kvasir.tgz") is None
    assert mine.exists() and not (cache / "datasets" / "kvasir").exists()
    mine.write_bytes(full)  # a good copy is accepted, not refused as "not the recorded file"
    assert main(argv) == 0
    assert State(cache).recorded("kvasir", "kvasir.tgz")["sha256"] == _sha256(full)
    assert len(list((cache / "datasets" / "kvasir").rglob("*.jpg"))) == 32


def test_a_corrupt_downloaded_archive_is_set_aside_and_its_record_is_forgotten(
    server: _Server, cache: Path
) -> None:
    full = _kvasir_tgz()
    server.files["/k.tgz"] = full[: len(full) // 2]  # the server's own copy is cut short
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir.tgz", server.url("/k.tgz"), None))
    with pytest.raises(DamagedArchiveError, match=r"moved aside to .*kvasir\.tgz\.corrupt") as err:
        fetch_item("kvasir", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert "python -m data_download kvasir" in str(err.value) and "was forgotten" in str(err.value)
    assert State(cache).recorded("kvasir", "kvasir.tgz") is None
    assert not (cache / "downloads" / "kvasir.tgz").exists()
    server.files["/k.tgz"] = full
    folder = fetch_item("kvasir", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert len(list(folder.rglob("*.jpg"))) == 32


def test_a_downloaded_archive_that_is_not_the_data_set_is_set_aside_and_its_record_forgotten(
    server: _Server, cache: Path
) -> None:
    """It reads to its end but holds too few images: without this, the same wrong archive and its first-use
    record would stay, and every later run would fail the same way (or refuse the right file)."""
    server.files["/k.tgz"] = _kvasir_tgz(1)  # 8 images where the manifest says 32
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir.tgz", server.url("/k.tgz"), None, images=32))
    with pytest.raises(WrongArchiveError, match=r"gave 8 images where the data set has 32") as err:
        fetch_item("kvasir", manifest=m, cache=cache, progress=False, log=lambda s: None)
    text = str(err.value)
    assert "moved aside to" in text and "python -m data_download kvasir" in text and "was forgotten" in text
    assert State(cache).recorded("kvasir", "kvasir.tgz") is None
    assert not (cache / "downloads" / "kvasir.tgz").exists()
    assert (cache / "downloads" / "kvasir.tgz.corrupt").exists()
    server.files["/k.tgz"] = _kvasir_tgz()  # the right archive upstream: accepted on the next run
    folder = fetch_item("kvasir", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert len(list(folder.rglob("*.jpg"))) == 32


def test_a_wrong_archive_given_with_from_is_left_alone_and_its_record_forgotten(
    tmp_path: Path, cache: Path
) -> None:
    wrong = tmp_path / "kvasir.tgz"
    wrong.write_bytes(_tar_bytes({"photos/cat.jpg": b"x"}))
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir.tgz", None, None, manual=True))
    with pytest.raises(WrongArchiveError, match="holds no Kvasir class folders") as err:
        fetch_item("kvasir", manifest=m, cache=cache, sources=[wrong], progress=False, log=lambda s: None)
    assert "your file was left alone" in str(err.value) and f"--from {wrong}" in str(err.value)
    assert wrong.exists() and State(cache).recorded("kvasir", "kvasir.tgz") is None
    wrong.write_bytes(_kvasir_tgz())
    folder = fetch_item(
        "kvasir", manifest=m, cache=cache, sources=[wrong], progress=False, log=lambda s: None
    )
    assert len(list(folder.rglob("*.jpg"))) == 32


def test_a_swap_that_fails_between_its_renames_puts_the_old_data_set_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import data_download.datasets as datasets

    final = tmp_path / "datasets" / "kvasir"
    final.mkdir(parents=True)
    (final / "good.txt").write_text("the prepared data set")
    real_replace = os.replace

    def failing_second_rename(src, dst):
        if ".partial-" in str(src):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(datasets.os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="Input/output"), datasets.building(final) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert [p.name for p in final.parent.iterdir()] == ["kvasir"]  # no .old-*, no .partial-*
    assert (final / "good.txt").read_text() == "the prepared data set"

    old = final.with_name(".kvasir.old-999")  # a process killed between the renames left only this
    real_replace(final, old)
    with datasets.building(final) as tmp:
        assert (final / "good.txt").exists()  # put back before the new build starts
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.parent.iterdir()] == ["kvasir"] and (final / "new.txt").exists()


# ------------------------------------------------------------------------------------------------------------------
# LIST and the command line


def test_list_shows_size_licence_source_and_state(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(
        tiny=_weights_item(server.url("/tiny.bin"), BLOB),
        other=_weights_item(server.url("/x.bin"), None) | {"target": "weights/other.bin"},
    )
    text = format_list(m, cache)
    assert "tiny  [weights]  256.0 KiB  -- MISSING" in text
    assert "licence : MIT" in text and server.url("/tiny.bin") in text and "the test server" in text
    assert "other  [weights]  size unknown" in text and "checksum recorded on first download" in text
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert "tiny  [weights]  256.0 KiB  -- VERIFIED" in format_list(m, cache)
    (cache / "weights" / "tiny.bin").write_bytes(BLOB[::-1])  # changed behind our back
    assert "-- UNVERIFIED" in format_list(m, cache)
    assert "-- CORRUPT" in format_list(m, cache, deep=True)


def test_a_stamp_counts_only_while_it_matches_the_manifest(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    m = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    fetch_item("tiny", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert item_status(m.get("tiny"), cache).state == "verified"
    # the manifest changed
    newer = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB, sha256="1" * 64))
    assert item_status(newer.get("tiny"), cache).state == "unverified"


def _write_manifest(path: Path, m: dict) -> Path:
    path.write_text(json.dumps({"items": m}))
    return path


def test_cli_unknown_item_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["resnet50", "no-such-item"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown item 'no-such-item'" in err and "resnet50" in err and "imagenet-val" in err


def test_cli_list_and_fetch(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.files["/tiny.bin"] = BLOB
    mf = _write_manifest(tmp_path / "m.json", {"tiny": _weights_item(server.url("/tiny.bin"), BLOB)})
    other = tmp_path / "elsewhere"
    assert main(["LIST", "--manifest", str(mf), "--cache", str(other)]) == 0
    out = capsys.readouterr().out
    assert f"Cache folder: {other}" in out and "-- MISSING" in out
    assert main(["tiny", "--manifest", str(mf), "--cache", str(other), "--quiet"]) == 0
    assert (other / "weights" / "tiny.bin").read_bytes() == BLOB
    assert "OPTICAM_CACHE" in capsys.readouterr().err  # told how to make the library read that folder


def test_cli_unwritable_cache_is_one_line(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/tiny.bin"] = BLOB
    mf = _write_manifest(tmp_path / "m.json", {"tiny": _weights_item(server.url("/tiny.bin"), BLOB)})
    afile = tmp_path / "afile"
    afile.write_text("")  # a cache "folder" below a file: every write fails with an OSError
    assert main(["tiny", "--manifest", str(mf), "--cache", str(afile / "cache"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "is writable" in err and "--cache DIR" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_no_lock_file_is_left_after_success_or_failure(server: _Server, cache: Path) -> None:
    server.files["/tiny.bin"] = BLOB
    ok = _manifest(tiny=_weights_item(server.url("/tiny.bin"), BLOB))
    fetch_item("tiny", manifest=ok, cache=cache, progress=False, log=lambda s: None)
    bad = _manifest(tiny=_weights_item(server.url("/missing.bin"), BLOB))
    with pytest.raises(data_download.DataDownloadError):
        fetch_item("tiny", manifest=bad, cache=cache, force=True, progress=False, log=lambda s: None)
    assert list((cache / ".data_download" / "locks").glob("*.lock")) == []


def test_cli_offline_exits_1_with_instructions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mf = _write_manifest(tmp_path / "m.json", {"tiny": _weights_item(_closed_port_url(), BLOB)})
    assert main(["tiny", "--manifest", str(mf), "--quiet", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "no network?" in err and "copy it to" in err


def test_cli_bad_arguments_exit_2(tmp_path: Path) -> None:
    for argv in (
        ["LIST", "resnet50"],
        ["resnet50", "--from", str(tmp_path / "nope")],
        ["resnet50", "--subset", "3"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


# ------------------------------------------------------------------------------------------------------------------
# Data sets


def _tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _dataset_item(prepare: str, name: str, url: str | None, data: bytes | None, **extra: Any) -> dict:
    return {
        "kind": "dataset",
        "folder": prepare,
        "prepare": prepare,
        "title": prepare,
        "licence": "test",
        "source": "the test server",
        "files": [
            {
                "name": name,
                "urls": [url] if url else [],
                "size": len(data) if data is not None else None,
                "sha256": _sha256(data) if data is not None else None,
            }
        ],
        **extra,
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_imagenette_extracts_only_val_with_imagenet_indices(server: _Server, cache: Path) -> None:
    archive = _tar_bytes(
        {
            "imagenette2-320/train/n01440764/t1.JPEG": b"train",
            "imagenette2-320/val/n01440764/a.JPEG": b"tench",
            "imagenette2-320/val/n02102040/b.JPEG": b"springer",
            "imagenette2-320/noisy_imagenette.csv": b"path,label\n",
        }
    )
    server.files["/imagenette2-320.tgz"] = archive
    m = _manifest(
        imagenette=_dataset_item(
            "imagenette", "imagenette2-320.tgz", server.url("/imagenette2-320.tgz"), archive
        )
    )
    folder = fetch_item("imagenette", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert folder == cache / "datasets" / "imagenette"
    assert (folder / "n01440764" / "a.JPEG").read_bytes() == b"tench"
    assert not list(folder.rglob("t1.JPEG"))
    rows = _rows(folder / "labels.csv")
    assert [(r["file"], r["class_index"], r["class_name"]) for r in rows] == [
        ("n01440764/a.JPEG", "0", "tench"),
        ("n02102040/b.JPEG", "217", "English springer"),
    ]
    assert not (cache / "downloads" / "imagenette2-320.tgz").exists()  # archive removed after extraction
    assert item_status(m.get("imagenette"), cache).state == "ready"
    n = len(server.requests)
    fetch_item("imagenette", manifest=m, cache=cache, progress=False, log=lambda s: None)  # already prepared
    assert len(server.requests) == n
    (folder / "n01440764" / "a.JPEG").unlink()
    assert item_status(m.get("imagenette"), cache).state == "damaged"


def test_the_library_refuses_a_prepared_folder_that_lost_files(
    server: _Server, cache: Path, tmp_path: Path
) -> None:
    """The library reads data_download's record of a prepared folder: a missing, resized or unlisted state is
    reported with the command that prepares it again, instead of silently loading a different image set."""
    from opticam_lib.errors import MissingDataError
    from opticam_lib.images import load_imagenet_folder
    from opticam_lib.paper.medical import dataset_root

    archive = _tar_bytes({f"i/val/n01440764/{k}.JPEG": b"x" * (k + 1) for k in range(3)})
    server.files["/i.tgz"] = archive
    m = _manifest(imagenette=_dataset_item("imagenette", "i.tgz", server.url("/i.tgz"), archive))
    folder = fetch_item("imagenette", manifest=m, cache=cache, progress=False, log=lambda s: None)
    (folder / "n01440764" / "1.JPEG").unlink()
    with pytest.raises(MissingDataError, match=r"damaged \(n01440764/1\.JPEG is missing\)") as err:
        load_imagenet_folder(folder)
    # the default cache: no --cache
    assert str(err.value).endswith("python -m data_download imagenette --force")

    elsewhere = tmp_path / "other-cache"  # prepared in a cache that is not the library's
    fetch_item("imagenette", manifest=m, cache=elsewhere, progress=False, log=lambda s: None)
    moved = elsewhere / "datasets" / "imagenette"
    (moved / "labels.csv").write_text("file,wnid\n")  # cut short
    with pytest.raises(MissingDataError, match=r"labels\.csv has changed size") as err:
        load_imagenet_folder(moved)
    assert f"python -m data_download imagenette --cache {elsewhere} --force" in str(err.value)
    (moved / ".complete.json").write_text('{"item": "imagenette", "fi')
    with pytest.raises(MissingDataError, match=r"\.complete\.json, cannot be read"):
        load_imagenet_folder(moved)

    chest = tmp_path / "chest"  # a medical folder with a cut splits.csv
    (chest / "test" / "NORMAL").mkdir(parents=True)
    (chest / "splits.csv").write_text("file,split\n")
    (chest / ".complete.json").write_text(
        json.dumps({"item": "chest-xray", "files": {"splits.csv": [999, "x"]}})
    )
    with pytest.raises(MissingDataError, match=r"splits\.csv has changed size"):
        dataset_root("chest-xray", chest)
    (chest / ".complete.json").unlink()  # a folder of the user's own (no marker) is not checked
    assert dataset_root("chest-xray", chest) == chest


def test_archive_members_cannot_escape_and_odd_names_are_refused(
    server: _Server, cache: Path, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in {
            "imagenette2-320/val/n01440764/a.JPEG": b"x",
            "imagenette2-320/val/n01440764/../../../../../evil.JPEG": b"y",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("imagenette2-320/val/n01440764/link.JPEG")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    archive = buf.getvalue()
    server.files["/i.tgz"] = archive
    m = _manifest(imagenette=_dataset_item("imagenette", "i.tgz", server.url("/i.tgz"), archive))
    folder = fetch_item("imagenette", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        ".complete.json",
        "a.JPEG",
        "labels.csv",
    ]
    assert not list(tmp_path.rglob("evil.JPEG"))

    odd = _tar_bytes(
        {"imagenette2-320/val/n01440764/a.JPEG": b"x", "imagenette2-320/val/n01440764/we|rd.JPEG": b"y"}
    )
    server.files["/odd.tgz"] = odd
    m = _manifest(imagenette=_dataset_item("imagenette", "odd.tgz", server.url("/odd.tgz"), odd))
    with pytest.raises(data_download.DataDownloadError, match="unusual file name"):
        fetch_item("imagenette", manifest=m, cache=cache, force=True, progress=False, log=lambda s: None)
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == ["imagenette"]  # the old folder, whole
    assert (folder / "n01440764" / "a.JPEG").read_bytes() == b"x"


def _val_fixture(tmp_path: Path, n: int) -> tuple[Path, Path, dict[int, str]]:
    wnids = {i: ("n01440764" if i % 2 else "n01443537") for i in range(1, n + 1)}
    images = {f"ILSVRC2012_val_{i:08d}.JPEG": f"image {i}".encode() for i in wnids}
    xml = (
        "<annotation><filename>ILSVRC2012_val_{i:08d}</filename><size><width>500</width><height>375</height>"
        "</size><object><name>{w}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>"
        "</bndbox></object></annotation>"
    )
    boxes = {f"val/ILSVRC2012_val_{i:08d}.xml": xml.format(i=i, w=w).encode() for i, w in wnids.items()}
    img_tar = tmp_path / "ILSVRC2012_img_val.tar"
    img_tar.write_bytes(_tar_bytes(images, mode="w"))
    bbox = tmp_path / "ILSVRC2012_bbox_val_v3.tgz"
    bbox.write_bytes(_tar_bytes(boxes))
    return img_tar, bbox, wnids


def _imagenet_manifest(img_tar: Path, md5: str | None = None) -> data_download.Manifest:
    item = json.loads((Path(data_download.__file__).with_name("manifest.json")).read_text())["items"][
        "imagenet-val"
    ]
    spec = item["files"][0]
    assert spec["name"] == "ILSVRC2012_img_val.tar"
    spec["size"] = img_tar.stat().st_size
    spec["md5"] = md5 or hashlib.md5(img_tar.read_bytes()).hexdigest()
    return parse_manifest({"items": {"imagenet-val": item}})


def test_imagenet_val_without_from_says_exactly_what_to_do(cache: Path) -> None:
    with pytest.raises(ManualStepRequired) as err:
        fetch_item("imagenet-val", cache=cache, progress=False, log=lambda s: None)
    text = str(err.value)
    assert "--from" in text and "ILSVRC2012_img_val.tar" in text and "ILSVRC2012_bbox_val_v3.tgz" in text
    assert "HF_TOKEN" in text and "ILSVRC/imagenet-1k" in text


def test_imagenet_val_subset_from_own_copy(tmp_path: Path, cache: Path) -> None:
    img_tar, bbox, wnids = _val_fixture(tmp_path, 20)
    m = _imagenet_manifest(img_tar)
    folder = fetch_item(
        "imagenet-val", manifest=m, cache=cache, sources=[img_tar, bbox], subset=5, imagenet_total=20,
        progress=False, log=lambda s: None,
    )  # fmt: skip
    chosen = imagenet_subset_ids(5, 20)
    assert (folder / "subset.txt").read_text().split() == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in chosen]
    labels = _rows(folder / "labels.csv")
    assert [r["file"] for r in labels] == [f"{wnids[i]}/ILSVRC2012_val_{i:08d}.JPEG" for i in chosen]
    assert {r["class_index"] for r in labels} <= {"0", "1"}
    assert all(
        (folder / r["file"]).read_bytes() == f"image {int(r['file'][-13:-5])}".encode() for r in labels
    )
    boxes = _rows(folder / "boxes.csv")
    assert len(boxes) == 5 and boxes[0]["xmax"] == "30" and boxes[0]["image_width"] == "500"
    assert len(list(folder.rglob("*.JPEG"))) == 5
    # the user's files are left alone and remembered as verified
    assert img_tar.exists() and State(cache).stamped(img_tar) is not None
    assert State(cache).recorded("imagenet-val", "ILSVRC2012_bbox_val_v3.tgz") is not None


def test_imagenet_val_refuses_a_wrong_archive(tmp_path: Path, cache: Path) -> None:
    img_tar, bbox, _ = _val_fixture(tmp_path, 6)
    m = _imagenet_manifest(img_tar, md5="0" * 32)
    with pytest.raises(ChecksumError, match="MD5"):
        fetch_item(
            "imagenet-val", manifest=m, cache=cache, sources=[img_tar, bbox], subset=2, imagenet_total=6,
            progress=False, log=lambda s: None,
        )  # fmt: skip
    assert not (cache / "datasets" / "imagenet-val").exists()


def test_imagenet_val_hugging_face_names_and_kaggle_csv(tmp_path: Path, cache: Path) -> None:
    hf = tmp_path / "val_images.tar.gz"
    hf.write_bytes(_tar_bytes({f"ILSVRC2012_val_{i:08d}_n01443537.JPEG": b"goldfish" for i in range(1, 9)}))
    loc = tmp_path / "LOC_val_solution.csv"
    loc.write_text(
        "ImageId,PredictionString\n"
        + "".join(f"ILSVRC2012_val_{i:08d},n01443537 5 6 70 80 \n" for i in range(1, 9))
    )
    m = load_manifest()
    folder = fetch_item(
        "imagenet-val", manifest=m, cache=cache, sources=[hf, loc], subset=3, imagenet_total=8,
        progress=False, log=lambda s: None,
    )  # fmt: skip
    labels = _rows(folder / "labels.csv")
    assert len(labels) == 3 and all(r["class_index"] == "1" and r["class_name"] == "goldfish" for r in labels)
    assert [b["xmin"] for b in _rows(folder / "boxes.csv")] == ["5", "5", "5"]


def test_chest_xray_split_rule(tmp_path: Path, cache: Path) -> None:
    members = {}
    for cls in ("NORMAL", "PNEUMONIA"):
        for i in range(10):
            members[f"chest_xray/train/{cls}/{cls.lower()}-{i}.jpeg"] = b"t"
        for i in range(3):
            members[f"chest_xray/test/{cls}/{cls.lower()}-test-{i}.jpeg"] = b"s"
    members["__MACOSX/chest_xray/train/NORMAL/._normal-0.jpeg"] = b"junk"
    members["chest_xray/train/NORMAL/.DS_Store"] = b"junk"
    mendeley = tmp_path / "ChestXRay2017.zip"
    mendeley.write_bytes(_zip_bytes(members))
    m = _manifest(
        chest_xray=_dataset_item("chest-xray", "ChestXRay2017.zip", None, mendeley.read_bytes(), manual=True)
    )
    folder = fetch_item(
        "chest-xray", manifest=m, cache=cache, sources=[mendeley], progress=False, log=lambda s: None
    )
    marker = json.loads((folder / ".complete.json").read_text())
    assert marker["counts"] == {"train": 4, "val": 16, "test": 6}
    rows = _rows(folder / "splits.csv")
    assert {r["class_index"] for r in rows if r["class_name"] == "PNEUMONIA"} == {"1"}
    assert json.loads((folder / "classes.json").read_text()) == ["NORMAL", "PNEUMONIA"]
    # the same archive gives the same split
    again = fetch_item(
        "chest-xray", manifest=m, cache=cache, sources=[mendeley], progress=False, log=lambda s: None
    )
    assert _rows(again / "splits.csv") == rows
    # an archive with its own val split (Kaggle, with its duplicated copy) keeps it
    kaggle = tmp_path / "archive.zip"
    kaggle.write_bytes(
        _zip_bytes(
            {
                **{f"chest_xray/{k}": v for k, v in members.items() if "__MACOSX" not in k},
                "chest_xray/chest_xray/train/NORMAL/normal-0.jpeg": b"dup",
                "chest_xray/val/NORMAL/v.jpeg": b"v",
                "chest_xray/val/PNEUMONIA/w.jpeg": b"w",
            }
        )
    )
    folder = fetch_item(
        "chest-xray", manifest=m, cache=cache, sources=[kaggle], progress=False, log=lambda s: None
    )
    assert json.loads((folder / ".complete.json").read_text())["counts"] == {"train": 20, "val": 2, "test": 6}


def test_kvasir_split_rule(server: _Server, cache: Path) -> None:
    members = {f"kvasir-dataset-v2/{c}/{c}-{i}.jpg": c.encode() for c in KVASIR_CLASSES for i in range(8)}
    archive = _zip_bytes(members)
    server.files["/kvasir.zip"] = archive
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir-dataset-v2.zip", server.url("/kvasir.zip"), archive))
    folder = fetch_item(
        "kvasir", manifest=m, cache=cache, keep_archive=True, progress=False, log=lambda s: None
    )
    marker = json.loads((folder / ".complete.json").read_text())
    assert marker["counts"] == {"train": 48, "val": 8, "test": 8}
    for c in KVASIR_CLASSES:
        assert len(list((folder / "val" / c).iterdir())) == 1
    assert (cache / "downloads" / "kvasir-dataset-v2.zip").exists()  # --keep-archive


def test_an_archive_with_too_few_images_is_refused(server: _Server, cache: Path) -> None:
    members = {f"kvasir-dataset-v2/{c}/{c}-0.jpg": c.encode() for c in KVASIR_CLASSES}  # 8 images, not 8,000
    archive = _zip_bytes(members)
    server.files["/kvasir.zip"] = archive
    m = _manifest(
        kvasir=_dataset_item(
            "kvasir", "kvasir-dataset-v2.zip", server.url("/kvasir.zip"), archive, images=8000
        )
    )
    with pytest.raises(data_download.DataDownloadError, match="gave 8 images where the data set has 8,000"):
        fetch_item("kvasir", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert not (cache / "datasets" / "kvasir").exists() and not list((cache / "datasets").glob(".kvasir*"))


@pytest.mark.parametrize("shape", ["one big member", "many members"])
def test_archive_bombs_are_refused(server: _Server, cache: Path, tmp_path: Path, shape: str) -> None:
    """A small zip that unpacks to far more than its size is refused (caps per member and in total)."""
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if shape == "one big member":
            zf.writestr("kvasir-dataset-v2/polyps/p.jpg", b"\0" * (70 << 20))
        else:
            for i, c in enumerate(KVASIR_CLASSES * 3):
                zf.writestr(f"kvasir-dataset-v2/{c}/{i}.jpg", b"\0" * (5 << 20))
    archive = zpath.read_bytes()
    assert len(archive) < 1 << 20  # well under a megabyte
    server.files["/kvasir.zip"] = archive
    m = _manifest(kvasir=_dataset_item("kvasir", "kvasir-dataset-v2.zip", server.url("/kvasir.zip"), archive))
    with pytest.raises(data_download.DataDownloadError, match="refused"):
        fetch_item("kvasir", manifest=m, cache=cache, progress=False, log=lambda s: None)
    assert not (cache / "datasets" / "kvasir").exists()
    assert not list((cache / "datasets").glob(".kvasir*"))  # the half-built folder is gone


# ------------------------------------------------------------------------------------------------------------------
# The shipped manifest


def test_shipped_manifest_is_complete_and_consistent() -> None:
    m = load_manifest()
    assert set(m.items) >= {"resnet50", "vgg16_bn", "vit_b_16", "deit_b_16", "imagenette", "imagenet-val",
                            "chest-xray", "kvasir"}  # fmt: skip
    for item in m.items.values():
        assert item.licence and item.source and item.title
        for spec in item.files:
            assert spec.checksum_source, (item.name, spec.name)
            assert all(u.startswith("https://") for u in spec.urls)
            if spec.sha256_prefix:  # torchvision: the file name carries the first hex digits of the SHA-256
                assert spec.name.split("-")[-1].split(".")[0] == spec.sha256_prefix
                assert spec.sha256 is None or spec.sha256.startswith(spec.sha256_prefix)
    assert m.get("imagenette").files[0].size == 341_663_724
    assert (
        m.get("imagenet-val").manual
        and m.get("imagenet-val").files[0].md5 == "29b22e2961454d5413ddabcf34fc5622"
    )
    with pytest.raises(ManifestError, match="known items"):
        m.get("resnet-50")


def test_weights_go_where_the_library_looks(cache: Path) -> None:
    from opticam_lib.models.registry import weights_path

    m = load_manifest()
    for name in ("resnet50", "vgg16_bn", "vit_b_16", "deit_b_16"):
        assert data_download.weights_target(m.get(name), cache) == weights_path(name)


def test_imagenet_subset_is_fixed() -> None:
    ids = imagenet_subset_ids(1000)
    assert len(ids) == 1000 and ids == sorted(set(ids)) and 1 <= ids[0] and ids[-1] <= 50_000
    assert imagenet_subset_ids(1000) == ids
    assert set(imagenet_subset_ids(10)) <= set(ids)  # smaller subsets are nested
    # pin the rule: changing it would silently change every reproduced number
    assert hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16] == PINNED_SUBSET


PINNED_SUBSET = "beadcc5752021969"  # imagenet_subset_ids(1000) starts 8, 40, 52, 103, 107


def test_default_cache_is_the_library_cache(monkeypatch, tmp_path):
    """data_download computes the cache folder itself (it does not import the library): the two rules agree."""
    from opticam_lib import paths

    for env in ({}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {"OPTICAM_CACHE": str(tmp_path / "c")}):
        monkeypatch.delenv("OPTICAM_CACHE", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert data_download.fetch.default_cache() == paths.cache_dir()
    assert data_download.fetch.CACHE_ENV_VAR == paths.ENV_VAR
