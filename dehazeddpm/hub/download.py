"""Fetching one file over HTTP(S) into the cache, through pooch, and the rules every download keeps.

pooch streams the body to a temporary file and renames it; on top sits only what is ours: a
private work folder beside the destination (so no half-written file ever shows in the cache),
retries with backoff for transient failures, the offline switch, the checks that what arrived is
the expected file, and errors that say what to do. :func:`publish` is the one way a finished
download (HTTP or Google Drive) enters the cache.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from ..utils import atomic_write, temporary_name
from .cache import is_offline, sha256_file
from .errors import DownloadError, HashMismatchError, WeightsMissingError
from .registry import normalise_sha256

__all__ = ["DEFAULT_DEADLINE", "DeadlineDownloader", "DeadlineExceeded", "cached_or_allowed", "check_existing", "download_file", "fetch_url", "looks_wrong", "manual_hint", "publish",
           "refuse_offline", "work_folder"]

USER_AGENT = "dehazeddpm-weights (pooch)"
# Longest one attempt may take, whatever the server does (the released denoiser is ~370 MB: ten
# minutes is under 1 MB/s).
DEFAULT_DEADLINE = 600.0


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
    """An attempt ran past its overall deadline (a server sending a byte now and then never times out)."""


class DeadlineDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that streams with requests and
    gives every attempt an overall ``deadline`` besides the per-read ``timeout``: a watchdog shuts
    the connection when the deadline passes, so even a trickling server cannot hang a download."""

    def __init__(self, *, timeout: float, deadline: float, progress: bool, chunk: int = 1 << 16):
        self.timeout, self.deadline, self.progress, self.chunk = timeout, deadline, progress, chunk

    def __call__(self, url: str, output_file: Union[str, Any], pooch: Any = None) -> None:
        import requests

        expired = threading.Event()
        with requests.get(url, stream=True, timeout=self.timeout, headers={"User-Agent": USER_AGENT}) as resp:
            resp.raise_for_status()

            def stop() -> None:
                expired.set()
                shutdown = getattr(resp.raw, "shutdown", None)  # urllib3 >= 2.3: wakes a blocked read
                (shutdown or resp.close)()

            watchdog = threading.Timer(self.deadline, stop)
            watchdog.daemon = True
            watchdog.start()
            bar = self._bar(resp, url)
            try:
                with _writable(output_file) as f:
                    for chunk in resp.iter_content(chunk_size=self.chunk):
                        f.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            except Exception:
                if expired.is_set():
                    raise DeadlineExceeded(f"no complete file within the {self.deadline:g} s deadline") from None
                raise
            finally:
                watchdog.cancel()
                if bar is not None:
                    bar.close()
            if expired.is_set():
                raise DeadlineExceeded(f"no complete file within the {self.deadline:g} s deadline")

    def _bar(self, resp: Any, url: str):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        total = int(resp.headers.get("Content-Length") or 0) or None
        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                    desc=url.rsplit("/", 1)[-1][:40])


def _writable(output_file: Any):
    """pooch hands a downloader a path or an open file."""
    return contextlib.nullcontext(output_file) if hasattr(output_file, "write") else open(output_file, "wb")


def _retrieve_once(url: str, folder: Path, name: str, timeout: float, deadline: float, progress: bool) -> Path:
    import pooch

    downloader = DeadlineDownloader(timeout=timeout, deadline=deadline, progress=progress)
    with _quiet_pooch():
        return Path(pooch.retrieve(url, known_hash=None, fname=name, path=str(folder), downloader=downloader))


def fetch_url(url: str, dest: Path, expected: Optional[str], *, retries: int, timeout: float,
              progress: bool, backoff: float, force: bool = False, page: Optional[str] = None,
              deadline: Optional[float] = None, verify: Optional[Callable[[Path], None]] = None) -> str:
    """Download ``url`` to ``dest`` (see :func:`download_file`); returns the file's sha256
    (``""`` for a cache hit without an expected hash)."""
    import requests

    where = page or url
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"unsupported URL {url!r}: only http(s) downloads are supported")
    hit = cached_or_allowed(dest, expected, where, force=force)
    if hit is not None:
        return hit
    attempts = max(0, int(retries)) + 1
    last = "no attempt made"
    for attempt in range(attempts):
        with work_folder(dest) as folder:
            try:
                got = _retrieve_once(url, folder, dest.name, timeout, deadline or DEFAULT_DEADLINE, progress)
            except requests.HTTPError as exc:
                last = _describe(exc)
                if exc.response is None or not _retryable_status(exc.response.status_code):
                    raise DownloadError(f"download of {url} failed: {last}. " + manual_hint(dest, where)) from None
            except (requests.RequestException, DeadlineExceeded) as exc:  # refused, reset, timed out, truncated
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
                  backoff: float = 0.5, deadline: Optional[float] = None) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``sha256`` when given.

    An existing ``dest`` that matches (or any existing ``dest`` when no hash is given) is
    returned without touching the network; one with a wrong hash raises. Network errors,
    5xx replies, truncated bodies and attempts past their ``deadline`` (seconds; default
    :data:`DEFAULT_DEADLINE`) are retried ``retries`` times with exponential ``backoff`` seconds;
    ``timeout`` bounds each network read. A 4xx reply or a hash mismatch fails at once. Every
    failure raises :class:`DownloadError` and leaves neither ``dest`` nor a temporary file behind.
    """
    dest = Path(dest)
    fetch_url(url, dest, normalise_sha256(sha256), retries=retries, timeout=timeout, progress=progress,
              backoff=backoff, deadline=deadline)
    return dest
