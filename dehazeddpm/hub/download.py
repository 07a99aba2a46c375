"""Fetching one file over HTTP(S) into the cache, through pooch, and the rules every download keeps.

pooch places the file; our downloader streams the body into a partial file that the retries share
(resumed with ``Range`` where the server honours it) and fails an attempt on a stall, never on the
total time. On top sits a private work folder beside the destination (so no half-written file ever
shows in the cache), retries with backoff for transient failures, the offline switch, the checks
that what arrived is the expected file, and errors that say what to do. :func:`publish` is the one way a finished
download (HTTP or Google Drive) enters the cache.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from ..utils import atomic_write, temporary_name
from .cache import is_offline, sha256_file
from .errors import DownloadError, HashMismatchError, WeightsMissingError
from .registry import normalise_sha256

__all__ = ["DEFAULT_DEADLINE", "DeadlineExceeded", "STALL_BYTES", "STALL_WINDOW", "StallingDownloader", "cached_or_allowed", "check_existing", "download_file", "fetch_url", "looks_wrong", "manual_hint", "publish",
           "refuse_offline", "work_folder"]

USER_AGENT = "dehazeddpm-weights (pooch)"
# An attempt stalls when fewer than STALL_BYTES arrive within STALL_WINDOW seconds (curl's
# --speed-limit/--speed-time); a slow but steady line finishes whatever the file's size.
STALL_BYTES = 1024
STALL_WINDOW = 30.0
# Kept for callers that set a cap of their own; downloads have none by default.
DEFAULT_DEADLINE = None


def manual_hint(dest: Path, where: str) -> str:
    return (f"Download it by hand from {where} and place it at {dest}, "
            "or pass the path of your local copy instead.")


def check_existing(dest: Path, expected: Optional[str]) -> Optional[str]:
    """Cache-hit test: None if ``dest`` is absent, ``""`` if present and no hash is expected, its
    digest if it matches. A mismatch raises and keeps the file: user files are never deleted."""
    if not dest.is_file():
        return None
    if expected is None:
        return ""
    digest = sha256_file(dest)
    if digest != expected:
        raise HashMismatchError(
            f"cached file {dest} is corrupt: its sha256 is {digest}, expected {expected}. "
            f"Delete it (rm '{dest}') and run the download again.")
    return digest


def refuse_offline(dest: Path, where: str) -> None:
    if is_offline():
        raise WeightsMissingError(
            f"offline mode (DEHAZEDDPM_OFFLINE=1): {dest.name} is not at {dest} and will not be "
            f"downloaded. Unset DEHAZEDDPM_OFFLINE to download it, or {manual_hint(dest, where)}")


def cached_or_allowed(dest: Path, expected: Optional[str], where: str, *, force: bool) -> Optional[str]:
    """What every fetch does first: the :func:`check_existing` result for a usable cached file
    (unless ``force``), else None once it is clear the network may be used."""
    if not force:
        hit = check_existing(dest, expected)
        if hit is not None:
            return hit
    refuse_offline(dest, where)
    return None


def looks_wrong(path: Path) -> Optional[str]:
    """Why a downloaded weights file is obviously not one (a web page, an LFS pointer), else None."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    low = head.lower()
    if low.startswith((b"<!doctype html", b"<html")) or (low.startswith(b"<") and b"<html" in low):
        return "the server sent a web page instead of the file (quota, login or error page)"
    if head.startswith(b"version https://git-lfs"):
        return "the server sent a Git LFS pointer instead of the file"
    return None


@contextlib.contextmanager
def work_folder(dest: Path) -> Iterator[Path]:
    """A private, hidden folder beside ``dest`` for one download attempt, removed afterwards
    (downloaders write their own partial files; here they can never be mistaken for weights)."""
    folder = temporary_name(dest)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise DownloadError(f"cannot create a temporary folder next to {dest}: {exc}") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(downloaded: Path, dest: Path, expected: Optional[str], where: str,
            verify: Optional[Callable[[Path], None]] = None) -> str:
    """Check a complete download and move it into place; returns its sha256.

    A wrong hash, an obviously wrong body (a web page) or, without an expected hash, a file that
    ``verify`` rejects (raising ValueError with the reason) raises and leaves ``dest`` untouched.
    """
    digest = sha256_file(downloaded)
    if expected is not None and digest != expected:
        raise HashMismatchError(
            f"{dest.name} from {where} has sha256 {digest}, expected {expected}: the file is "
            f"corrupt or was replaced upstream. Nothing was written to {dest}. " + manual_hint(dest, where))
    if expected is None:
        problem = looks_wrong(downloaded)
        if problem is None and verify is not None:
            try:
                verify(downloaded)
            except ValueError as exc:
                problem = f"what arrived is not the expected file ({exc})"
        if problem:
            raise DownloadError(f"{dest.name} from {where}: {problem}. Nothing was kept. " + manual_hint(dest, where))
    try:
        atomic_write(dest, lambda tmp: shutil.move(str(downloaded), str(tmp)))
    except OSError as exc:
        raise DownloadError(f"could not move the download into place at {dest}: {exc}") from None
    return digest


def _retryable_status(code: int) -> bool:
    # 408/429 are the server asking us to come back later; other 4xx will not change.
    return code >= 500 or code in (408, 429)


def _describe(exc: BaseException) -> str:
    import requests

    text = " ".join(str(exc).split()) or "no details"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if "IncompleteRead" in text or "incomplete" in text.lower():
        return f"truncated body ({text})"
    if isinstance(exc, (requests.Timeout, DeadlineExceeded)):
        return f"timed out ({text})"
    if isinstance(exc, requests.ConnectionError):
        return f"network error ({text})"
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs every download at INFO; our own messages say what matters."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class DeadlineExceeded(OSError):
    """An attempt stalled (fewer than the stated bytes within the stall window) or ran past a cap
    the caller set."""


class StallingDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that streams with requests into
    ``partial`` (a file that outlives one attempt), resuming it with an HTTP ``Range`` request when
    the server honours one (206) and starting over when it does not (200).

    An attempt fails when fewer than ``stall_bytes`` arrive within ``stall_window`` seconds (curl's
    ``--speed-limit``/``--speed-time``): a slow but steady download completes whatever its size,
    a trickling server is cut within the window. ``deadline`` (seconds, None: none) caps an
    attempt for callers who want one. ``timeout`` bounds each network read.
    """

    def __init__(self, partial: Path, *, timeout: float, stall_bytes: int, stall_window: float,
                 deadline: Optional[float], progress: bool, chunk: int = 1 << 16):
        self.partial, self.timeout, self.progress, self.chunk = partial, timeout, progress, chunk
        self.stall_bytes, self.stall_window, self.deadline = stall_bytes, stall_window, deadline
        self.received = 0

    def __call__(self, url: str, output_file: Union[str, Any], pooch: Any = None) -> None:
        import requests

        offset = self.partial.stat().st_size if self.partial.is_file() else 0
        headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
        with requests.get(url, stream=True, timeout=self.timeout, headers=headers) as resp:
            if resp.status_code == 416:  # nothing left to send from there: start over
                self.partial.unlink()
                return self(url, output_file, pooch)
            resp.raise_for_status()
            if resp.status_code != 206:  # Range not honoured: the whole body again
                offset = 0
            self._stream(resp, offset, url)
        if isinstance(output_file, (str, os.PathLike)):  # pooch's temporary, beside the partial: a rename
            os.replace(self.partial, output_file)
            return
        with _writable(output_file) as out, open(self.partial, "rb") as f:
            shutil.copyfileobj(f, out)

    def _stream(self, resp: Any, offset: int, url: str) -> None:
        why: list = []
        done = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(resp, done, why), daemon=True)
        bar = self._bar(resp, url, offset)
        watchdog.start()
        try:
            with open(self.partial, "ab" if offset else "wb") as f:
                for chunk in self._pieces(resp):
                    f.write(chunk)
                    self.received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except Exception:
            if why:
                raise DeadlineExceeded(why[0]) from None
            raise
        finally:
            done.set()
            if bar is not None:
                bar.close()
        if why:
            raise DeadlineExceeded(why[0])

    def _pieces(self, resp: Any) -> Iterator[bytes]:
        """The body as the bytes arrive (urllib3's ``read1``), so the stall watch and a resume see
        every byte received, not only whole blocks; blocks of ``chunk`` where read1 is missing."""
        read1 = getattr(resp.raw, "read1", None)
        if read1 is None:
            yield from resp.iter_content(chunk_size=self.chunk)
            return
        import requests
        from urllib3.exceptions import HTTPError as Urllib3Error

        while True:
            try:
                data = read1(self.chunk, decode_content=True)
            except Urllib3Error as exc:  # what requests' iter_content would have wrapped
                raise requests.exceptions.ChunkedEncodingError(str(exc)) from exc
            if not data:
                return
            yield data

    def _watch(self, resp: Any, done: threading.Event, why: list) -> None:
        start = mark = time.monotonic()
        seen = self.received
        while not done.wait(min(0.25, self.stall_window / 4)):
            now = time.monotonic()
            if self.received - seen >= self.stall_bytes:
                mark, seen = now, self.received
            elif now - mark >= self.stall_window:
                why.append(f"stalled: under {self.stall_bytes} bytes in {self.stall_window:g} s")
            if self.deadline is not None and now - start >= self.deadline:
                why.append(f"no complete file within the {self.deadline:g} s deadline this call set")
            if why:
                shutdown = getattr(resp.raw, "shutdown", None)  # urllib3 >= 2.3: wakes a blocked read
                (shutdown or resp.close)()
                return

    def _bar(self, resp: Any, url: str, offset: int):
        """Bytes, rate and time left; a resumed attempt starts where the last one stopped."""
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        length = int(resp.headers.get("Content-Length") or 0)
        return tqdm(total=offset + length if length else None, initial=offset, unit="B", unit_scale=True,
                    unit_divisor=1024, leave=False, desc=url.rsplit("/", 1)[-1][:40])


def _writable(output_file: Any):
    """pooch hands a downloader a path or an open file."""
    return contextlib.nullcontext(output_file) if hasattr(output_file, "write") else open(output_file, "wb")


def _retrieve_once(url: str, folder: Path, name: str, downloader: StallingDownloader) -> Path:
    import pooch

    with _quiet_pooch():
        return Path(pooch.retrieve(url, known_hash=None, fname=name, path=str(folder), downloader=downloader))


def fetch_url(url: str, dest: Path, expected: Optional[str], *, retries: int, timeout: float,
              progress: bool, backoff: float, force: bool = False, page: Optional[str] = None,
              deadline: Optional[float] = None, verify: Optional[Callable[[Path], None]] = None,
              stall_bytes: int = STALL_BYTES, stall_window: float = STALL_WINDOW) -> str:
    """Download ``url`` to ``dest`` (see :func:`download_file`); returns the file's sha256
    (``""`` for a cache hit without an expected hash). The attempts share one work folder, so a
    retry continues from the bytes already received when the server honours ``Range``."""
    import requests

    where = page or url
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"unsupported URL {url!r}: only http(s) downloads are supported")
    hit = cached_or_allowed(dest, expected, where, force=force)
    if hit is not None:
        return hit
    attempts = max(0, int(retries)) + 1
    last = "no attempt made"
    with work_folder(dest) as folder:
        downloader = StallingDownloader(folder / (dest.name + ".partial"), timeout=timeout, stall_bytes=stall_bytes,
                                        stall_window=stall_window, deadline=deadline, progress=progress)
        for attempt in range(attempts):
            try:
                got = _retrieve_once(url, folder, dest.name, downloader)
            except requests.HTTPError as exc:
                last = _describe(exc)
                if exc.response is None or not _retryable_status(exc.response.status_code):
                    raise DownloadError(f"download of {url} failed: {last}. " + manual_hint(dest, where)) from None
            except (requests.RequestException, DeadlineExceeded) as exc:  # refused, reset, stalled, truncated
                last = _describe(exc)
            except OSError as exc:  # a local problem (disk full, permissions): retrying will not help
                raise DownloadError(f"could not write the download next to {dest}: {exc}") from None
            else:
                return publish(got, dest, expected, where, verify)
            if attempt + 1 < attempts and backoff > 0:
                time.sleep(backoff * (2 ** attempt))
    raise DownloadError(f"download of {url} failed after {attempts} attempt(s): {last}. " + manual_hint(dest, where))


def download_file(url: str, dest: Union[str, "Path"], sha256: Optional[str] = None, *,
                  retries: int = 3, timeout: float = 60, progress: bool = True,
                  backoff: float = 0.5, deadline: Optional[float] = None, stall_bytes: Optional[int] = None,
                  stall_window: Optional[float] = None) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``sha256`` when given.

    An existing ``dest`` that matches (or any existing ``dest`` when no hash is given) is
    returned without touching the network; one with a wrong hash raises. Network errors, 5xx
    replies, truncated bodies and stalls (fewer than ``stall_bytes``, default
    :data:`STALL_BYTES`, within ``stall_window`` seconds, default :data:`STALL_WINDOW`) are retried
    ``retries`` times with exponential ``backoff`` seconds, continuing from the bytes received when
    the server honours ``Range``. A slow but steady download completes whatever its size;
    ``deadline`` (seconds) caps each attempt for callers who want a cap. ``timeout`` bounds each
    network read. A 4xx reply or a hash mismatch fails at once. Every failure raises
    :class:`DownloadError` and leaves neither ``dest`` nor a temporary file behind.
    """
    dest = Path(dest)
    fetch_url(url, dest, normalise_sha256(sha256), retries=retries, timeout=timeout, progress=progress,
              backoff=backoff, deadline=deadline,
              stall_bytes=STALL_BYTES if stall_bytes is None else int(stall_bytes),
              stall_window=STALL_WINDOW if stall_window is None else float(stall_window))
    return dest
