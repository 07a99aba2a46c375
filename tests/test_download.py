"""Downloads against a real HTTP server on 127.0.0.1, and the gdown translation layer."""
from __future__ import annotations

import collections
import hashlib
import inspect
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from dehazeddpm import hub as W


def _checkpoint_bytes(n: int) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(float(n))}, buf)
    return buf.getvalue()


# The loopback entry's denoiser: a tiny UNet in the released *_gen.pth layout.
LOOP_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 8, "norm_groups": 4, "channel_mults": [1, 2],
             "attn_res": [8], "res_blocks": 1, "dropout": 0.0, "image_size": 16}


def _denoiser_bytes() -> bytes:
    from dehazeddpm.diffusion import RELEASED_SCHEDULE, NoiseSchedule
    from dehazeddpm.io import denoiser_state_dict
    from dehazeddpm.models import UNet, UNetConfig

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(denoiser_state_dict(UNet.from_config(UNetConfig.from_dict(LOOP_UNET)),
                                   NoiseSchedule.from_config(RELEASED_SCHEDULE)), buf)
    return buf.getvalue()


# Real torch checkpoints, since weights without a published sha256 must be one (of the right role,
# for the entry's files) to be kept.
GOOD = _checkpoint_bytes(16384)  # 64 KiB: several reads, small enough to be instant
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
OTHER = _denoiser_bytes()
OTHER_SHA = hashlib.sha256(OTHER).hexdigest()
FOLDER_URL = "https://drive.google.com/drive/folders/1I7sH6vb9oWOZeIVu6-xh9Xm5lnwdzHa7"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so every attempt is a fresh, countable request.
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        path = self.path.split("?")[0]
        with srv.lock:
            srv.counts[path] += 1
            n = srv.counts[path]
        if path == "/good":
            self._send(200, GOOD)
        elif path == "/other":
            self._send(200, srv.other_body)
        elif path == "/html":
            self._send(200, b"<!DOCTYPE html><html><body>Quota exceeded</body></html>")
        elif path == "/truncated":
            # Promise more than we send, then close: the client sees a short body.
            self._send(200, GOOD[:1000], length=len(GOOD))
            self.wfile.flush()
        elif path == "/drop":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:4096])
            self.wfile.flush()
            # SO_LINGER 0 turns close() into a reset: a connection dropped mid-body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif path == "/flaky":
            # Two transient failures of different kinds, then the file.
            if n == 1:
                self._send(503, b"busy")
            elif n == 2:
                self._send(200, GOOD[:10], length=len(GOOD))
            else:
                self._send(200, GOOD)
        elif path == "/bodies":  # what servers send instead of a checkpoint, by ?kind=
            kind = self.path.split("kind=")[-1]
            body = {"random": os.urandom(5000), "json": b'{"error": "rate limited"}',
                    "comment": b"<!-- " + b"x" * 600 + b" --><html><body>login</body></html>"}.get(kind)
            if kind == "cut":  # a truncated checkpoint, without Content-Length to give it away
                self.send_response(200)
                self.end_headers()
                self.wfile.write(OTHER[: len(OTHER) // 2])
            else:
                self._send(200, body)
        elif path == "/trickle":  # a byte a tenth of a second: never a read timeout, never done
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            try:
                for _ in range(len(GOOD)):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif path == "/steady":  # GOOD (64 KiB) at a steady ~40 KiB/s: about 1.6 s in all
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            for i in range(0, len(GOOD), 4096):
                self.wfile.write(GOOD[i:i + 4096])
                self.wfile.flush()
                time.sleep(0.1)
        elif path in ("/cut", "/cut-norange"):  # the first request stops at 60%; Range honoured by /cut
            rng = self.headers.get("Range")
            start = int(rng.split("=")[1].rstrip("-")) if rng and path == "/cut" else 0
            body = GOOD[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(GOOD) - 1}/{len(GOOD)}")
            self.end_headers()
            sent = body[: int(len(GOOD) * 0.6)] if n == 1 else body
            self.wfile.write(sent)
            self.wfile.flush()
            with srv.lock:
                srv.sent[path] += len(sent)
            if n == 1:  # cut the connection mid-body
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
        elif path == "/404":
            self._send(404, b"not here")
        elif path == "/500":
            self._send(500, b"oops")
        else:
            self._send(404, b"unknown")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # the dropped-connection handler ends badly
        pass


class LoopbackServer:
    def __init__(self) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.counts = collections.Counter()
        self.httpd.sent = collections.Counter()  # body bytes sent, by path (the /cut endpoints)
        self.httpd.lock = threading.Lock()
        self.httpd.other_body = OTHER
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.running = True

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def count(self, path: str | None = None) -> int:
        with self.httpd.lock:
            return sum(self.httpd.counts.values()) if path is None else self.httpd.counts[path]

    def shutdown(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = LoopbackServer()
    yield srv
    srv.shutdown()


@pytest.fixture(autouse=True)
def _online(monkeypatch, tmp_path):
    # CI runs with DEHAZEDDPM_OFFLINE=1; these tests only ever talk to 127.0.0.1.
    monkeypatch.delenv("DEHAZEDDPM_OFFLINE", raising=False)
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "cache"))


def _files(folder: Path) -> list:
    """Everything in a folder, hidden temp files and folders included."""
    return sorted(os.listdir(folder)) if folder.exists() else []


def _get(server, path, dest, sha=None, **kw):
    kw.setdefault("retries", 3)
    return W.download_file(server.url(path), dest, sha, progress=False, backoff=0, timeout=5, **kw)


# --------------------------------------------------------------------------------------------
# HTTP downloads
# --------------------------------------------------------------------------------------------

def test_good_file_with_right_hash(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    out = _get(server, "/good", dest, GOOD_SHA)
    assert out == dest
    assert dest.read_bytes() == GOOD
    assert _files(dest.parent) == ["w.pth"]
    assert server.count("/good") == 1


def test_good_file_without_hash(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    _get(server, "/good", dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == GOOD_SHA
    assert _files(dest.parent) == ["w.pth"]


def test_hash_mismatch_fails_at_once_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError) as err:
        _get(server, "/good", dest, "0" * 64)
    assert isinstance(err.value, W.HashMismatchError)
    msg = str(err.value)
    assert GOOD_SHA in msg and "0" * 64 in msg and str(dest) in msg
    assert not dest.exists()
    assert _files(dest.parent) == []
    assert server.count("/good") == 1  # a wrong hash is not retried


def test_truncated_body_is_retried_then_fails(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError) as err:
        _get(server, "/truncated", dest, retries=2)
    msg = str(err.value)
    assert "truncated" in msg and "3 attempt" in msg
    assert "by hand" in msg and str(dest) in msg
    assert server.count("/truncated") == 3
    assert not dest.exists() and _files(dest.parent) == []


def test_dropped_connection_is_retried_then_fails(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError) as err:
        _get(server, "/drop", dest, GOOD_SHA, retries=1)
    assert "2 attempt" in str(err.value)
    assert server.count("/drop") == 2
    assert not dest.exists() and _files(dest.parent) == []


def test_http_404_is_not_retried(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError) as err:
        _get(server, "/404", dest, retries=3)
    msg = str(err.value)
    assert "HTTP 404" in msg and server.url("/404") in msg and str(dest) in msg
    assert server.count("/404") == 1
    assert not dest.exists() and _files(dest.parent) == []


def test_http_500_is_retried(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError) as err:
        _get(server, "/500", dest, retries=2)
    assert "HTTP 500" in str(err.value)
    assert server.count("/500") == 3
    assert not dest.exists() and _files(dest.parent) == []


def test_transient_failures_then_success(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    _get(server, "/flaky", dest, GOOD_SHA, retries=3)
    assert dest.read_bytes() == GOOD
    assert server.count("/flaky") == 3  # 503, truncated, good
    assert _files(dest.parent) == ["w.pth"]


def test_web_page_instead_of_weights_is_rejected(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError, match="web page"):
        _get(server, "/html", dest)
    assert server.count("/html") == 1
    assert _files(dest.parent) == []


def test_second_call_is_a_cache_hit_without_network(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    _get(server, "/good", dest, GOOD_SHA)
    url = server.url("/good")
    server.shutdown()
    # The server is gone: a fresh download fails, the cached one is still returned.
    with pytest.raises(W.DownloadError):
        W.download_file(url, tmp_path / "dl" / "other.pth", retries=0, progress=False, backoff=0,
                        timeout=2)
    assert W.download_file(url, dest, GOOD_SHA, progress=False, backoff=0) == dest
    assert W.download_file(url, dest, progress=False, backoff=0) == dest
    assert dest.read_bytes() == GOOD


def test_corrupt_cached_file_raises_and_is_kept(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    dest.parent.mkdir()
    dest.write_bytes(b"damaged")
    with pytest.raises(W.HashMismatchError) as err:
        _get(server, "/good", dest, GOOD_SHA)
    msg = str(err.value)
    assert "corrupt" in msg and f"rm '{dest}'" in msg
    assert dest.read_bytes() == b"damaged"  # user files are never deleted behind their back
    assert server.count() == 0


def test_offline_refuses_without_connecting(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(W.DownloadError) as err:
        _get(server, "/good", dest, GOOD_SHA)
    assert isinstance(err.value, W.WeightsMissingError)
    assert "DEHAZEDDPM_OFFLINE" in str(err.value) and str(dest) in str(err.value)
    assert server.count() == 0
    assert _files(dest.parent) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        W.download_file("http://127.0.0.1:9/x", tmp_path / "x", "abc")
    with pytest.raises(W.DownloadError, match="unsupported URL"):
        W.download_file("ftp://example.org/x", tmp_path / "x", progress=False)


# --------------------------------------------------------------------------------------------
# resolve() end to end through the loopback server
# --------------------------------------------------------------------------------------------

def _entry(server, name="loop", stage1_sha=None) -> W.WeightsEntry:
    reg = W.load_registry()["nh-haze"]
    return W.WeightsEntry(
        name=name, description="loopback test entry",
        stage1=W.FileSpec(filename="s1.pth", source="url", url=server.url("/good"), sha256=stage1_sha),
        denoiser=W.FileSpec(filename="den.pth", source="url", url=server.url("/other")),
        unet_config=dict(LOOP_UNET), schedule=reg.schedule, dataset="test", citation=reg.citation)


def test_resolve_downloads_records_hashes_then_hits_cache(server, tmp_path):
    entry = _entry(server, stage1_sha=GOOD_SHA)
    res = W.resolve(entry, progress=False)
    cache = tmp_path / "cache"
    assert res.stage1 == cache / "loop" / "s1.pth" and res.stage1.read_bytes() == GOOD
    assert res.denoiser.read_bytes() == OTHER
    assert res.stage1_verified and not res.denoiser_verified and not res.verified
    assert res.notes["denoiser"] == f"unverified (sha256 recorded on first download: {OTHER_SHA})"
    recorded = json.loads((cache / "recorded_hashes.json").read_text())["files"]
    assert recorded["loop/den.pth"]["sha256"] == OTHER_SHA
    assert recorded["loop/den.pth"]["size"] == len(OTHER)
    assert "loop/s1.pth" not in recorded  # the registry hash is authoritative there
    assert server.count() == 2

    server.shutdown()
    again = W.resolve(entry, progress=False)
    assert again.stage1 == res.stage1 and again.notes == res.notes

    # A damaged cached file is caught against the recorded hash.
    res.denoiser.write_bytes(OTHER[:-1] + b"!")
    with pytest.raises(W.HashMismatchError, match="recorded on first download"):
        W.resolve(entry, progress=False)


def test_redownload_must_match_recorded_hash(server, tmp_path):
    entry = _entry(server, stage1_sha=GOOD_SHA)
    first = W.resolve(entry, progress=False)
    first.denoiser.unlink()
    server.httpd.other_body = b"PK\x03\x04 replaced upstream"
    with pytest.raises(W.HashMismatchError) as err:
        W.resolve(entry, progress=False)
    assert "--forget-hash" in str(err.value)
    assert not first.denoiser.exists()
    assert _files(first.denoiser.parent) == ["s1.pth"]


# --------------------------------------------------------------------------------------------
# Google Drive through gdown: the translation layer and the temp-file rules
# --------------------------------------------------------------------------------------------

gdown = pytest.importorskip("gdown")
from gdown.exceptions import FileURLRetrievalError  # noqa: E402  (after the importorskip)


def test_installed_gdown_has_the_arguments_we_use():
    # We call only arguments present in both gdown 5.x and 6.x.
    for fn in (gdown.download, gdown.download_folder):
        params = inspect.signature(fn).parameters
        assert {"id", "output", "quiet"} <= set(params), fn


def test_translate_quota_message(tmp_path):
    dest = tmp_path / "NH_I230000_E4600_gen.pth"
    exc = FileURLRetrievalError(
        "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file "
        "recently. Please try accessing the file again later.\n\nYou may still be able to access "
        "the file from the browser")
    err = W.translate_gdown_error(exc, filename=dest.name, dest=dest, file_id="abc")
    assert isinstance(err, W.DownloadError) and isinstance(err, RuntimeError)
    msg = str(err)
    assert "Too many users have viewed or downloaded this file recently" in msg
    assert FOLDER_URL in msg and str(dest) in msg and dest.name in msg
    assert "\n" not in msg  # one line for the CLI


def test_translate_public_link_message(tmp_path):
    exc = FileURLRetrievalError("Cannot retrieve the public link of the file. You may need to "
                                "change the permission to 'Anyone with the link'")
    msg = str(W.translate_gdown_error(exc, filename="f.pth", dest=tmp_path / "f.pth"))
    assert "limits how often" in msg and FOLDER_URL in msg


def test_translate_none_and_network_errors(tmp_path):
    msg = str(W.translate_gdown_error(None, filename="f.pth", dest=tmp_path / "f.pth"))
    assert "without a file" in msg and FOLDER_URL in msg
    requests = pytest.importorskip("requests")
    msg = str(W.translate_gdown_error(requests.exceptions.ConnectionError("boom"), filename="f.pth",
                                      dest=tmp_path / "f.pth", page="https://example.org/p"))
    assert "ConnectionError" in msg and "boom" in msg and "https://example.org/p" in msg


class _FakeGdown:
    """Stands in for gdown's download functions (dependency injection): writes like gdown does."""

    def __init__(self, body=GOOD, fail=None, partial=False, return_none=False):
        self.body, self.fail, self.partial, self.return_none = body, fail, partial, return_none
        self.calls = []

    def __call__(self, *, id, output, quiet):
        self.calls.append({"id": id, "output": output, "quiet": quiet})
        out = Path(output)
        if self.partial:  # gdown's own partial file beside its output
            (out.parent / (out.name + "abcd.part")).write_bytes(self.body[:100])
        if self.fail is not None:
            raise self.fail
        if self.return_none:
            return None
        out.write_bytes(self.body)
        return output


def test_gdrive_success_and_cleanup(tmp_path):
    fake = _FakeGdown()
    dest = tmp_path / "c" / "den.pth"
    W.download_gdrive("https://drive.google.com/file/d/FILE_id-1/view?usp=sharing", dest, GOOD_SHA,
                      progress=False, downloader=fake)
    assert dest.read_bytes() == GOOD
    assert fake.calls[0]["id"] == "FILE_id-1" and fake.calls[0]["quiet"] is True
    assert _files(dest.parent) == ["den.pth"]
    # cache hit: the downloader is not called again
    W.download_gdrive("FILE_id-1", dest, GOOD_SHA, progress=False, downloader=fake)
    assert len(fake.calls) == 1


def test_gdrive_quota_failure_leaves_nothing(tmp_path):
    fake = _FakeGdown(partial=True, fail=FileURLRetrievalError(
        "Too many users have viewed or downloaded this file recently."))
    dest = tmp_path / "c" / "NH_I230000_E4600_gen.pth"
    with pytest.raises(W.DownloadError) as err:
        W.download_gdrive("xyz", dest, progress=False, downloader=fake,
                          page=FOLDER_URL)
    assert FOLDER_URL in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists() and _files(dest.parent) == []


def test_gdrive_none_result_and_bad_hash(tmp_path):
    dest = tmp_path / "c" / "den.pth"
    with pytest.raises(W.DownloadError, match="without a file"):
        W.download_gdrive("xyz", dest, progress=False, downloader=_FakeGdown(return_none=True))
    with pytest.raises(W.HashMismatchError):
        W.download_gdrive("xyz", dest, "1" * 64, progress=False, downloader=_FakeGdown())
    with pytest.raises(W.DownloadError, match="web page"):
        W.download_gdrive("xyz", dest, progress=False,
                          downloader=_FakeGdown(body=b"<html><body>Google Drive</body></html>"))
    assert not dest.exists() and _files(dest.parent) == []


def test_gdrive_offline_does_not_call_gdown(tmp_path, monkeypatch):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    fake = _FakeGdown()
    with pytest.raises(W.WeightsMissingError):
        W.download_gdrive("xyz", tmp_path / "c" / "den.pth", progress=False, downloader=fake)
    assert fake.calls == []


def _full_folder(files):
    """A download_folder without skip_download (older gdown): fetches every file."""
    calls = []

    def download_folder(*, id, output, quiet):
        calls.append(id)
        for rel, body in files.items():
            p = Path(output) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)
        return [str(Path(output) / rel) for rel in files]
    return download_folder, calls


def test_gdrive_folder_full_download_picks_the_file(tmp_path):
    folder, calls = _full_folder({"Diffusion_trained_pth/NH_I230000_E4600_gen.pth": GOOD,
                                  "Diffusion_trained_pth/DENSE_I130000_E2600_gen.pth": OTHER})
    dest = tmp_path / "c" / "NH_I230000_E4600_gen.pth"
    W.download_gdrive_folder("FOLDER", dest.name, dest, GOOD_SHA, progress=False,
                             folder_downloader=folder)
    assert calls == ["FOLDER"]
    assert dest.read_bytes() == GOOD
    assert _files(dest.parent) == [dest.name]


def test_gdrive_folder_without_the_file(tmp_path):
    folder, _ = _full_folder({"a/README.txt": b"hello"})
    dest = tmp_path / "c" / "NH_I230000_E4600_gen.pth"
    with pytest.raises(W.DownloadError, match="README.txt"):
        W.download_gdrive_folder("FOLDER", dest.name, dest, progress=False, folder_downloader=folder)
    assert _files(dest.parent) == []


def test_gdrive_folder_listing_fetches_only_the_wanted_file(tmp_path):
    Item = collections.namedtuple("GoogleDriveFileToDownload", ("id", "path", "local_path"))
    listed = []

    def download_folder(*, id, output, quiet, skip_download=False):
        assert skip_download is True
        listed.append(id)
        return [Item("id-nh", "Diffusion_trained_pth/NH_I230000_E4600_gen.pth", "x"),
                Item("id-dense", "Diffusion_trained_pth/DENSE_I130000_E2600_gen.pth", "y")]

    fake = _FakeGdown(body=OTHER)
    dest = tmp_path / "c" / "DENSE_I130000_E2600_gen.pth"
    W.download_gdrive_folder("FOLDER", dest.name, dest, OTHER_SHA, progress=False,
                             folder_downloader=download_folder, file_downloader=fake)
    assert listed == ["FOLDER"] and [c["id"] for c in fake.calls] == ["id-dense"]
    assert dest.read_bytes() == OTHER and _files(dest.parent) == [dest.name]


def test_gdrive_folder_listing_quota_error(tmp_path):
    def download_folder(*, id, output, quiet, skip_download=False):
        raise FileURLRetrievalError("Cannot retrieve the public link of the file.")

    dest = tmp_path / "c" / "NH_I230000_E4600_gen.pth"
    with pytest.raises(W.DownloadError) as err:
        W.download_gdrive_folder(W.RELEASE_DRIVE_FOLDER_ID, dest.name, dest, progress=False,
                                 folder_downloader=download_folder, file_downloader=_FakeGdown())
    assert FOLDER_URL in str(err.value)
    assert _files(dest.parent) == []


# --------------------------------------------------------------------------------------------
# What a download must be before it is kept (weights without a published sha256)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random", "json", "comment", "cut"])
def test_unverifiable_body_is_neither_kept_nor_recorded(server, tmp_path, kind):
    entry = _entry(server, stage1_sha=GOOD_SHA)
    entry = W.WeightsEntry(**{**entry.__dict__, "denoiser": W.FileSpec(
        filename="den.pth", source="url", url=server.url(f"/bodies?kind={kind}"))})
    with pytest.raises(W.DownloadError, match="not the expected file|web page") as err:
        W.resolve(entry, progress=False)
    assert "Nothing was kept" in str(err.value) and "\n" not in str(err.value)
    cache = tmp_path / "cache"
    assert _files(cache / "loop") == ["s1.pth"]  # the stage-1 file (published hash) is in; no leftovers
    assert "loop/den.pth" not in W.recorded_hashes(cache)


def test_a_trickling_server_cannot_hang_a_download(server, tmp_path):
    dest = tmp_path / "dl" / "w.pth"
    t0 = time.monotonic()
    with pytest.raises(W.DownloadError, match="deadline") as err:
        W.download_file(server.url("/trickle"), dest, retries=1, timeout=5, deadline=1.0, backoff=0, progress=False)
    assert time.monotonic() - t0 < 10 and "2 attempt" in str(err.value)
    assert _files(dest.parent) == []


def test_parallel_downloads_keep_every_recorded_hash(tmp_path):
    """Eight processes recording eight files at once: the lock keeps all eight."""
    code = ("import sys; from pathlib import Path; from dehazeddpm.hub import record_hash; "
            "record_hash(Path(sys.argv[1]), f'e{sys.argv[2]}/f.pth', sys.argv[2] * 64, 1, 'test')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache"), str(i)]) for i in range(8)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert sorted(W.recorded_hashes(tmp_path / "cache")) == [f"e{i}/f.pth" for i in range(8)]


def test_leftovers_of_killed_runs_are_removed_at_the_next_download(server, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "cache" / "loop"
    folder.mkdir(parents=True)
    (folder / f".s1.pth.tmp-{int(dead.stdout)}-0badf00d").mkdir()  # a killed attempt's work folder
    (folder / "den.pth.part-1a2b3c4d").write_bytes(b"half")       # an older version's partial file
    W.resolve(_entry(server, stage1_sha=GOOD_SHA), progress=False)
    assert _files(folder) == ["den.pth", "s1.pth"]


def test_a_bad_cached_checkpoint_says_how_to_download_it_again(tmp_path, monkeypatch):
    from dehazeddpm.inference import DehazePipeline
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    for name in ("NH_net_g_80000.pth", "NH_I230000_E4600_gen.pth"):
        p = tmp_path / "cache" / "nh-haze" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(W.WeightsError, match="not a stage1 checkpoint.*`dehazeddpm download nh-haze --force`"):
        DehazePipeline.from_pretrained("nh-haze", device="cpu", progress=False)
    assert W.recorded_hashes() == {}  # a file placed by hand is checked before its hash is trusted


def test_a_full_disk_during_a_drive_download_says_so(tmp_path):
    import errno
    err = W.translate_gdown_error(OSError(errno.ENOSPC, "No space left on device"), filename="den.pth",
                                  dest=tmp_path / "den.pth")
    assert "No space left on device" in str(err) and "DEHAZEDDPM_CACHE" in str(err)
    assert "connection" not in str(err)


def test_a_loadable_checkpoint_of_the_wrong_role_is_not_kept(server, tmp_path):
    """A download without a published sha256 must load as the entry's network: a checkpoint of
    another role (the denoiser file served at stage 1's address) is refused and nothing recorded."""
    entry = W.WeightsEntry(
        name="swap", description="loopback", stage1=W.FileSpec(filename="s1.pth", source="url", url=server.url("/other")),
        denoiser=W.FileSpec(filename="den.pth", source="url", url=server.url("/other")),
        unet_config=dict(LOOP_UNET), schedule=W.load_registry()["nh-haze"].schedule, dataset="t", citation="t")
    with pytest.raises(W.DownloadError, match="stage-2|stage1|denoiser"):
        W.resolve(entry, progress=False)
    assert not (tmp_path / "cache" / "swap" / "s1.pth").exists() and W.recorded_hashes() == {}


# --------------------------------------------------------------------------------------------
# Stalls, not deadlines; retries that continue from the bytes received
# --------------------------------------------------------------------------------------------

def test_a_slow_but_steady_download_completes_past_any_fixed_deadline(server, tmp_path):
    dest = tmp_path / "steady.pth"
    t0 = time.monotonic()
    W.download_file(server.url("/steady"), dest, GOOD_SHA, retries=0, timeout=5, progress=False, stall_bytes=1024,
                    stall_window=0.5)
    assert dest.read_bytes() == GOOD and time.monotonic() - t0 > 1.0  # longer than a 1 s cap would allow
    with pytest.raises(W.DownloadError, match="deadline"):  # the cap stays for callers who want one
        W.download_file(server.url("/steady"), tmp_path / "capped.pth", retries=0, timeout=5, deadline=0.5,
                        progress=False)


def test_a_stalled_server_fails_within_the_stall_window_and_retries(server, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(W.DownloadError, match="stalled: under 1024 bytes in 0.5 s") as err:
        W.download_file(server.url("/trickle"), tmp_path / "t.pth", retries=2, timeout=5, backoff=0,
                        progress=False, stall_bytes=1024, stall_window=0.5)
    assert time.monotonic() - t0 < 10 and "3 attempt(s)" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing left behind


@pytest.mark.parametrize("path,factor", [("/cut", 1.0), ("/cut-norange", 1.6)])
def test_a_cut_connection_resumes_where_range_is_honoured(server, tmp_path, path, factor):
    dest = tmp_path / "cut.pth"
    W.download_file(server.url(path), dest, GOOD_SHA, retries=2, timeout=5, backoff=0, progress=False)
    assert dest.read_bytes() == GOOD and server.count(path) == 2
    # with Range the second request sent only the missing 40%; without it, the whole file again
    assert server.httpd.sent[path] == pytest.approx(factor * len(GOOD), abs=2)
    assert [p.name for p in tmp_path.iterdir()] == ["cut.pth"]


def test_a_resumed_download_is_still_checked(server, tmp_path):
    with pytest.raises(W.HashMismatchError):
        W.download_file(server.url("/cut"), tmp_path / "bad.pth", OTHER_SHA, retries=2, timeout=5, backoff=0,
                        progress=False)
    assert not list(tmp_path.iterdir())
