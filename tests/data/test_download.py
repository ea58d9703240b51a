"""download(): resume with Range, restart when Range is ignored, checksums, truncation, errors.

Runs against a local ``http.server`` on 127.0.0.1 in a thread; no network.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metagrad.data.download import ChecksumError, DownloadError, download, md5_of_file


class FileServer:
    """Serves ``files`` by path; ``mode`` = ``"range"`` (honours Range), ``"ignore_range"``
    (always 200 with the whole file) or ``"truncate"`` (closes after half the body)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.mode = "range"
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.body_bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if server.mode == "range" and match:
                    start = int(match.group(1))
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
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.mode == "truncate":
                    payload = payload[: len(payload) // 2]
                    self.close_connection = True
                self.wfile.write(payload)
                server.body_bytes_sent += len(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small zip of incompressible bytes (~200 kB), made outside the download folder."""
    path = tmp_path_factory.mktemp("payload") / "payload.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.bin", os.urandom(200_000))
    return path.read_bytes()


@pytest.fixture
def server(payload: bytes):
    srv = FileServer({"/files/data.zip": payload})
    yield srv
    srv.close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fresh_download_is_complete_and_leaves_no_part(tmp_path, server, payload):
    dest = tmp_path / "out" / "data.zip"
    seen = []
    got = download(
        server.url + "/files/data.zip",
        dest,
        _md5(payload),
        chunk_size=8192,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert got == dest
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["data.zip"]
    assert server.requests == [("/files/data.zip", None)]
    assert seen[-1] == (len(payload), len(payload))
    assert zipfile.ZipFile(dest).testzip() is None


def test_resume_sends_range_and_fetches_only_the_rest(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    have = 123_457
    (tmp_path / "data.zip.part").write_bytes(payload[:have])
    download(server.url + "/files/data.zip", dest, _md5(payload), chunk_size=4096)
    assert server.requests == [("/files/data.zip", f"bytes={have}-")]
    assert server.body_bytes_sent == len(payload) - have
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path) == ["data.zip"]


def test_restart_when_server_ignores_range(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    # A wrong prefix: appending to it would corrupt the file, so a restart is the only way
    # the checksum can pass.
    (tmp_path / "data.zip.part").write_bytes(b"\0" * 5000)
    server.mode = "ignore_range"
    download(server.url + "/files/data.zip", dest, _md5(payload))
    assert server.requests[0][1] == "bytes=5000-"
    assert server.body_bytes_sent == len(payload)
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path) == ["data.zip"]


def test_complete_part_is_finished_on_416(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    (tmp_path / "data.zip.part").write_bytes(payload)
    download(server.url + "/files/data.zip", dest, _md5(payload))
    assert dest.read_bytes() == payload
    assert server.body_bytes_sent == 0


def test_part_longer_than_the_file_is_discarded(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    (tmp_path / "data.zip.part").write_bytes(payload + b"stale tail")
    download(server.url + "/files/data.zip", dest, None)  # no checksum: relies on the size
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path) == ["data.zip"]


def test_wrong_checksum_raises_and_leaves_nothing(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as err:
        download(server.url + "/files/data.zip", dest, wrong)
    message = str(err.value)
    assert wrong in message and _md5(payload) in message
    assert "run the download again" in message
    assert _leftovers(tmp_path) == []


def test_truncated_download_raises_keeps_part_and_resumes(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    server.mode = "truncate"
    with pytest.raises(DownloadError, match=r"truncated|broke") as err:
        download(server.url + "/files/data.zip", dest, _md5(payload))
    assert str(len(payload)) in str(err.value)
    assert not dest.exists()
    part = tmp_path / "data.zip.part"
    assert part.read_bytes() == payload[: len(payload) // 2]

    server.mode = "range"
    download(server.url + "/files/data.zip", dest, _md5(payload))
    assert server.requests[-1][1] == f"bytes={len(payload) // 2}-"
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path) == ["data.zip"]


def test_http_error_is_clear(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(server.url + "/nope.zip", tmp_path / "x.zip", None)
    assert "x.zip" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_unreachable_host_is_clear(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="could not reach"):
        download(f"http://127.0.0.1:{port}/a.zip", tmp_path / "a.zip", None, timeout=5)
    assert _leftovers(tmp_path) == []


def test_existing_file_is_verified_not_refetched(tmp_path, server, payload):
    dest = tmp_path / "data.zip"
    dest.write_bytes(payload)
    download(server.url + "/files/data.zip", dest, _md5(payload))
    assert server.requests == []

    dest.write_bytes(b"something else")
    with pytest.raises(DownloadError, match="already exists"):
        download(server.url + "/files/data.zip", dest, _md5(payload))
    assert dest.read_bytes() == b"something else"  # never overwrites a user's file
    assert md5_of_file(dest) == _md5(b"something else")
