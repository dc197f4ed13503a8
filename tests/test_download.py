"""Download, resume and safe extraction of Speech Commands against a local HTTP server.

Every request goes to a server on 127.0.0.1 that each test starts and stops; handler threads
end by themselves (short socket timeouts, bounded sleeps).
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwscli.data.download import (
    DATASETS,
    MARKER,
    DownloadResult,
    download_archive,
    download_dataset,
    extract_archive,
)
from kwscli.errors import ConfigError, DataError, DownloadError

PATH = "/speech_commands_v0.01.tar.gz"
ROOT_NAME = "speech_commands_v0.01"


class _Server(ThreadingHTTPServer):
    """Serves `payload` at PATH; the attributes below choose how it misbehaves."""

    daemon_threads = True
    payload = b""
    honour_range = True  # False: answer 200 with everything, like servers without Range
    drop_after: int | None = None  # cut the next response after this many body bytes
    stall = 0.0  # sleep before answering, to trip the client's timeout
    status: int | None = None  # answer every request with this error status

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[str | None] = []  # the Range header of each request, or None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PATH}"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that timed out and hung up is expected here; keep test output quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5  # a stuck client cannot hold a server thread for long

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        if srv.stall:
            time.sleep(srv.stall)
        if srv.status or self.path != PATH:
            self.send_error(srv.status or 404)
            return
        body, start = srv.payload, 0
        wanted = self.headers.get("Range")
        if wanted and srv.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
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
        data = body[start:]
        if srv.drop_after is not None:  # announce everything, send a prefix, hang up
            data, srv.drop_after = data[: srv.drop_after], None
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not see (or break) requests to 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny archive laid out like Speech Commands (members under `./`)."""
    tree = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for word, count in (("yes", 2), ("sheila", 2), ("_background_noise_", 1)):
        (tree / word).mkdir()
        for i in range(count):
            audio = (0.1 * rng.standard_normal(1600)).astype(np.float32)
            sf.write(tree / word / f"{i:08x}_nohash_0.wav", audio, 16_000, subtype="PCM_16")
    (tree / "validation_list.txt").write_text("yes/00000000_nohash_0.wav\n")
    (tree / "testing_list.txt").write_text("sheila/00000000_nohash_0.wav\n")
    archive = tmp_path_factory.mktemp("archive") / "speech_commands_v0.01.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=".")
    return archive


@pytest.fixture
def payload(tarball: Path) -> bytes:
    return tarball.read_bytes()


@pytest.fixture
def server(payload: bytes) -> Iterator[_Server]:
    srv = _Server()
    srv.payload = payload
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


def _get(server: _Server, dest: Path, **kwargs: object) -> DownloadResult:
    kwargs = {"expected_size": len(server.payload), "timeout": 2.0, **kwargs}
    return download_dataset("v0.01", dest, url=server.url, **kwargs)


def _assert_dataset(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [MARKER, "_background_noise_", "sheila", "testing_list.txt", "validation_list.txt", "yes"]
    )
    audio, sr = sf.read(root / "yes" / "00000000_nohash_0.wav")
    assert sr == 16_000 and audio.shape == (1600,)
    assert json.loads((root / MARKER).read_text())["clips"] == 4


def test_full_download_extracts_writes_marker_and_reports_progress(
    server: _Server, tmp_path: Path
) -> None:
    calls: list[tuple[int, int | None]] = []
    result = _get(server, tmp_path, progress=lambda done, total: calls.append((done, total)))
    n = len(server.payload)
    assert result.root == tmp_path / ROOT_NAME
    assert (result.bytes_downloaded, result.resumed, result.already_present) == (n, False, False)
    _assert_dataset(result.root)
    marker = json.loads((result.root / MARKER).read_text())
    assert marker["version"] == "v0.01" and marker["archive_size"] == n
    assert sorted(p.name for p in tmp_path.iterdir()) == [ROOT_NAME]  # archive removed, no temp
    assert server.requests == [None]
    assert calls[0] == (0, n) and calls[-1] == (n, n)
    done = [d for d, _ in calls]
    assert done == sorted(done)


def test_second_call_is_idempotent_and_makes_no_request(server: _Server, tmp_path: Path) -> None:
    _get(server, tmp_path)
    server.requests.clear()
    again = download_dataset("v0.01", tmp_path, url=_closed_port_url(), expected_size=1)
    assert again.already_present and again.bytes_downloaded == 0
    assert again.root == tmp_path / ROOT_NAME
    assert server.requests == []


def test_dropped_connection_resumes_with_range(
    server: _Server, tmp_path: Path, tarball: Path
) -> None:
    k = 5000
    server.drop_after = k
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        _get(server, tmp_path)
    part = tmp_path / f"{ROOT_NAME}.tar.gz.part"
    assert part.stat().st_size == k
    assert not (tmp_path / ROOT_NAME).exists() and not (tmp_path / f"{ROOT_NAME}.tar.gz").exists()

    result = _get(server, tmp_path, keep_archive=True)
    assert server.requests == [None, f"bytes={k}-"]
    assert result.resumed and result.bytes_downloaded == len(server.payload) - k
    assert (tmp_path / f"{ROOT_NAME}.tar.gz").read_bytes() == tarball.read_bytes()
    assert not part.exists()
    _assert_dataset(result.root)


def test_server_ignoring_range_restarts_from_zero(
    server: _Server, tmp_path: Path, tarball: Path
) -> None:
    server.honour_range = False
    part = tmp_path / f"{ROOT_NAME}.tar.gz.part"
    part.write_bytes(b"\xff" * 3000)  # garbage: would corrupt the archive if appended to
    result = _get(server, tmp_path, keep_archive=True)
    assert server.requests == ["bytes=3000-"]
    assert not result.resumed and result.bytes_downloaded == len(server.payload)
    assert (tmp_path / f"{ROOT_NAME}.tar.gz").read_bytes() == tarball.read_bytes()
    _assert_dataset(result.root)


def test_part_larger_than_expected_is_deleted_and_restarted(
    server: _Server, tmp_path: Path
) -> None:
    (tmp_path / f"{ROOT_NAME}.tar.gz.part").write_bytes(b"\0" * (len(server.payload) + 1))
    result = _get(server, tmp_path)
    assert server.requests == [None] and not result.resumed
    _assert_dataset(result.root)


@pytest.mark.parametrize("offset", [0, 1], ids=["part-complete", "part-too-long"])
def test_416_with_unknown_size_checks_the_part(
    server: _Server, tmp_path: Path, tarball: Path, offset: int
) -> None:
    """Range past the end → 416: a whole .part is accepted, a longer one fetched again."""
    archive = tmp_path / "a.tar.gz"
    Path(f"{archive}.part").write_bytes(server.payload + b"\0" * offset)
    received, _ = download_archive(server.url, archive, None, timeout=2.0)
    assert server.requests[0] == f"bytes={len(server.payload) + offset}-"
    assert received == (0 if offset == 0 else len(server.payload))
    assert archive.read_bytes() == tarball.read_bytes()


def test_wrong_size_fails_and_leaves_nothing_complete(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"serves [\d,]+ bytes but [\d,]+ were expected"):
        _get(server, tmp_path, expected_size=len(server.payload) + 10)
    assert list(tmp_path.iterdir()) == []


def test_existing_archive_of_wrong_size_is_refused(server: _Server, tmp_path: Path) -> None:
    (tmp_path / f"{ROOT_NAME}.tar.gz").write_bytes(b"short")
    with pytest.raises(DownloadError, match="delete it and run again"):
        _get(server, tmp_path)
    assert server.requests == []


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_is_a_download_error(server: _Server, tmp_path: Path, status: int) -> None:
    server.status = status
    with pytest.raises(DownloadError, match=f"HTTP {status}.*--from-archive FILE") as info:
        _get(server, tmp_path)
    assert server.url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_a_clear_download_error(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(DownloadError) as info:
        download_dataset("v0.01", tmp_path, url=url, expected_size=10, timeout=2.0)
    message = str(info.value)
    assert message.startswith(f"cannot reach {url} (")
    assert "check your connection" in message and "\n" not in message
    assert "urlopen error" not in message


@pytest.mark.slow
def test_timeout_is_a_download_error(server: _Server, tmp_path: Path) -> None:
    server.stall = 1.0
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        _get(server, tmp_path, timeout=0.2)
    assert time.monotonic() - start < 1.0


def test_unknown_version_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of v0.01, v0.02"):
        download_dataset("v9", tmp_path)


def test_foreign_directory_is_not_overwritten(server: _Server, tmp_path: Path) -> None:
    (tmp_path / ROOT_NAME).mkdir()
    (tmp_path / ROOT_NAME / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a complete download"):
        _get(server, tmp_path)
    assert server.requests == []
    assert (tmp_path / ROOT_NAME / "mine.txt").read_text() == "keep me"


def test_registry_names_and_sizes() -> None:
    assert DATASETS["v0.01"].name == "speech_commands_v0.01"
    assert DATASETS["v0.02"].name == "speech_commands_v0.02"
    assert DATASETS["v0.02"].size == 2_428_923_189


@pytest.fixture(params=[True, False], ids=["data-filter", "fallback-checks"])
def data_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run extraction both with tarfile's "data" filter and with only our own checks."""
    if request.param and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    if not request.param:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_extract_archive_from_local_file(tarball: Path, tmp_path: Path, data_filter: bool) -> None:
    root = extract_archive(tarball, tmp_path / "data" / ROOT_NAME, version="v0.01")
    assert root == tmp_path / "data" / ROOT_NAME
    _assert_dataset(root)
    assert extract_archive(tarball, root) == root  # already complete: nothing to do


def _evil_tarball(path: Path, kind: str, outside: Path) -> None:
    """A good member, then one that tries to escape the destination."""
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("yes/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo({"dotdot": "../evil", "absolute": str(outside)}.get(kind, "link"))
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../evil"
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, str(outside)
        elif kind == "device":
            bad.type = tarfile.CHRTYPE
        else:
            bad.size = 4
        tar.addfile(bad, io.BytesIO(b"evil") if bad.size else None)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_malicious_archive_is_refused_and_writes_nothing_outside(
    tmp_path: Path, kind: str, data_filter: bool
) -> None:
    outside = tmp_path / "evil"
    archive = tmp_path / "bad.tar.gz"
    _evil_tarball(archive, kind, outside)
    dest = tmp_path / "out" / ROOT_NAME
    with pytest.raises(DataError, match="refusing to unpack|unsafe"):
        extract_archive(archive, dest)
    assert not outside.exists() and not (tmp_path / "out" / "evil").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no dataset dir, no temporary dir


def test_malicious_download_is_refused(server: _Server, tmp_path: Path) -> None:
    _evil_tarball(tmp_path / "bad.tar.gz", "dotdot", tmp_path / "evil")
    server.payload = (tmp_path / "bad.tar.gz").read_bytes()
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="refusing to unpack"):
        _get(server, dest)
    assert not (tmp_path / "evil").exists()
    assert not (dest / ROOT_NAME).exists()


def test_truncated_archive_is_a_data_error(tarball: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tarball.read_bytes()[:4000])
    with pytest.raises(DataError, match="corrupt, truncated or unsafe"):
        extract_archive(cut, tmp_path / "out" / ROOT_NAME)
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_download_then_idempotent_then_refused_connection(
    server: _Server, tmp_path: Path
) -> None:
    """`kws data download` end to end against the local server, as a user would run it."""
    from typer.testing import CliRunner

    from kwscli.cli import app

    args = [
        "data",
        "download",
        "--dest",
        str(tmp_path),
        "--url",
        server.url,
        "--expected-size",
        str(len(server.payload)),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"downloaded {len(server.payload):,} bytes" in first.output
    _assert_dataset(tmp_path / "speech_commands_v0.01")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already present" in again.output
    refused = CliRunner().invoke(
        app, ["data", "download", "--dest", str(tmp_path / "other"), "--url", _closed_port_url()]
    )
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "error:" in refused.output and "--from-archive" in refused.output
