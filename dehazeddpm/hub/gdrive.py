"""Google Drive downloads through gdown: the released denoisers sit in the authors' shared folder.

Drive throttles popular files ("Too many users have viewed or downloaded this file recently")
and then serves a warning page instead of the file; :func:`translate_gdown_error` turns that and
every other gdown failure into one :class:`DownloadError` that explains it and says how to fetch
the file by hand. Only gdown arguments present in both 5.x (Colab) and 6.x are used.
"""
from __future__ import annotations

import errno
import inspect
import os
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional, Union

from .download import cached_or_allowed, manual_hint, publish, work_folder
from .errors import DownloadError
from .registry import RELEASE_DRIVE_FOLDER_ID, gdrive_file_id, normalise_sha256

__all__ = ["download_gdrive", "download_gdrive_folder", "fetch_gdrive", "fetch_gdrive_folder",
           "translate_gdown_error"]


_QUOTA_MARKERS = ("too many users", "cannot retrieve the public link", "many accesses", "quota")


def translate_gdown_error(exc: Optional[BaseException], *, filename: str, dest: Union[str, os.PathLike],
                          file_id: Optional[str] = None, page: Optional[str] = None) -> DownloadError:
    """Turn a gdown failure (an exception, or ``None`` for "returned no file") into a
    :class:`DownloadError` that explains the Drive quota and the manual way round it."""
    dest = Path(dest)
    page = page or f"https://drive.google.com/drive/folders/{RELEASE_DRIVE_FOLDER_ID}"
    manual = (f"To get it by hand: open {page} , download {filename} and put it at {dest} "
              "(or pass the path of your copy instead).")
    what = f"{filename}" + (f" (Drive id {file_id})" if file_id else "")
    said = " ".join(str(exc).split())[:400] if exc is not None else ""
    names = {cls.__name__ for cls in type(exc).__mro__} if exc is not None else set()
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return DownloadError(f"cannot write {what} to {dest.parent}: {exc.strerror or said}. Free space (the file "
                             f"is large) or point DEHAZEDDPM_CACHE at a folder with room, then try again.")
    if exc is None or "FileURLRetrievalError" in names or any(m in said.lower() for m in _QUOTA_MARKERS):
        reason = (f"gdown said: {said}" if said
                  else "gdown returned without a file")
        return DownloadError(
            f"Google Drive would not serve {what}; {reason}. Drive limits how often a shared "
            "file may be downloaded ('Too many users have viewed or downloaded this file "
            "recently') and then serves a warning page instead of the file; the limit resets "
            f"after a while (often within 24 h). {manual}")
    return DownloadError(
        f"downloading {what} from Google Drive failed: {type(exc).__name__}: {said or 'no details'}. "
        f"Check the connection and try again. {manual}")


def _import_gdown():
    try:
        import gdown  # noqa: F401  (lazy: only Drive downloads need it)
    except ImportError:
        raise DownloadError("Google Drive downloads need gdown: pip install 'gdown>=5'") from None
    return gdown


def _gdown_file(downloader: Callable[..., Any], file_id: str, out: Path, *, quiet: bool,
                dest: Path, page: Optional[str]) -> Path:
    try:
        result = downloader(id=file_id, output=str(out), quiet=quiet)
    except Exception as exc:  # gdown raises many kinds (requests, its own); all mean "no file"
        raise translate_gdown_error(exc, filename=dest.name, dest=dest, file_id=file_id,
                                    page=page) from exc
    if result is None or not out.is_file():
        raise translate_gdown_error(None, filename=dest.name, dest=dest, file_id=file_id, page=page)
    return out


def fetch_gdrive(file_id: str, dest: Path, expected: Optional[str], *, progress: bool,
                 page: Optional[str], downloader: Optional[Callable[..., Any]],
                 force: bool = False, verify: Optional[Callable[[Path], None]] = None) -> str:
    file_id = gdrive_file_id(file_id)
    where = page or f"https://drive.google.com/file/d/{file_id}/view"
    hit = cached_or_allowed(dest, expected, where, force=force)
    if hit is not None:
        return hit
    if downloader is None:
        downloader = _import_gdown().download
    # gdown writes its own partial files beside its output: a private folder catches them all.
    with work_folder(dest) as work:
        out = _gdown_file(downloader, file_id, work / dest.name, quiet=not progress, dest=dest, page=where)
        return publish(out, dest, expected, where, verify)


def download_gdrive(file_id: str, dest: Union[str, os.PathLike], sha256: Optional[str] = None, *,
                    progress: bool = True, page: Optional[str] = None,
                    downloader: Optional[Callable[..., Any]] = None) -> Path:
    """Download one Google Drive file (id or link) to ``dest`` through gdown.

    Same rules as :func:`download_file` (cache hit, offline refusal, atomic move, hash check,
    no leftovers). ``downloader`` defaults to ``gdown.download`` and is called as
    ``downloader(id=..., output=..., quiet=...)``; ``page`` is the address shown for manual
    download when Drive refuses.
    """
    dest = Path(dest)
    fetch_gdrive(file_id, dest, normalise_sha256(sha256), progress=progress, page=page,
                  downloader=downloader)
    return dest


def _accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def fetch_gdrive_folder(folder_id: str, filename: str, dest: Path, expected: Optional[str], *,
                         progress: bool, page: Optional[str],
                         folder_downloader: Optional[Callable[..., Any]],
                        file_downloader: Optional[Callable[..., Any]],
                        force: bool = False, verify: Optional[Callable[[Path], None]] = None) -> str:
    folder_id = gdrive_file_id(folder_id)
    where = page or f"https://drive.google.com/drive/folders/{folder_id}"
    hit = cached_or_allowed(dest, expected, where, force=force)
    if hit is not None:
        return hit
    if folder_downloader is None:
        gdown = _import_gdown()
        folder_downloader = gdown.download_folder
        file_downloader = file_downloader or gdown.download
    quiet = not progress
    with work_folder(dest) as work:
        if file_downloader is not None and _accepts_keyword(folder_downloader, "skip_download"):
            # List the folder and fetch only the wanted file: the folder holds several
            # multi-GB checkpoints and every extra file eats into Drive's download quota.
            try:
                listing = folder_downloader(id=folder_id, output=str(work), quiet=quiet,
                                            skip_download=True)
            except Exception as exc:
                raise translate_gdown_error(exc, filename=filename, dest=dest,
                                            file_id=folder_id, page=where) from exc
            if listing is None:
                raise translate_gdown_error(None, filename=filename, dest=dest,
                                            file_id=folder_id, page=where)
            found = {PurePosixPath(str(getattr(item, "path", ""))).name: getattr(item, "id", None)
                     for item in listing}
            if not found.get(filename):
                raise DownloadError(
                    f"the Google Drive folder {where} has no file named {filename} "
                    f"(it lists: {', '.join(sorted(found)) or 'nothing'}). "
                    + manual_hint(dest, where))
            out = _gdown_file(file_downloader, found[filename], work / filename, quiet=quiet,
                              dest=dest, page=where)
        else:
            try:
                result = folder_downloader(id=folder_id, output=str(work), quiet=quiet)
            except Exception as exc:
                raise translate_gdown_error(exc, filename=filename, dest=dest,
                                            file_id=folder_id, page=where) from exc
            if result is None:
                raise translate_gdown_error(None, filename=filename, dest=dest,
                                            file_id=folder_id, page=where)
            matches = sorted(p for p in work.rglob("*") if p.is_file() and p.name == filename)
            if not matches:
                present = sorted(p.name for p in work.rglob("*") if p.is_file())
                raise DownloadError(
                    f"the Google Drive folder {where} has no file named {filename} "
                    f"(it holds: {', '.join(present) or 'nothing'}). " + manual_hint(dest, where))
            out = matches[0]
        return publish(out, dest, expected, where, verify)


def download_gdrive_folder(folder_id: str, filename: str, dest: Union[str, os.PathLike],
                           sha256: Optional[str] = None, *, progress: bool = True,
                           page: Optional[str] = None,
                           folder_downloader: Optional[Callable[..., Any]] = None,
                           file_downloader: Optional[Callable[..., Any]] = None) -> Path:
    """Fetch the file called ``filename`` out of a shared Drive folder into ``dest``.

    With gdown's ``skip_download`` (present in current gdown) the folder is only listed and
    the one file downloaded; otherwise the whole folder goes to a temporary folder and the
    wanted file is moved into place. The callables default to ``gdown.download_folder`` /
    ``gdown.download``; everything else as in :func:`download_gdrive`.
    """
    dest = Path(dest)
    fetch_gdrive_folder(folder_id, filename, dest, normalise_sha256(sha256), progress=progress,
                         page=page, folder_downloader=folder_downloader,
                         file_downloader=file_downloader)
    return dest
