"""Resumable, checksum-verified, atomic file downloads (stdlib ``urllib`` only).

The file is streamed to ``<dest>.part``; an interrupted download resumes from that partial file
with an HTTP ``Range`` request (restarting from scratch when the server ignores ``Range``). Only a
complete file whose MD5 matches is fsynced and atomically renamed to ``dest``, so nothing
half-written ever appears under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from metagrad.errors import DownloadError

__all__ = ["ChecksumError", "DownloadError", "download", "md5_of_file"]

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected MD5 checksum."""


def md5_of_file(path: Path, chunk_size: int = _CHUNK) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    md5: str | None,
    *,
    timeout: float = 60.0,
    chunk_size: int = _CHUNK,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download if there is one.

    Args:
        url: ``http(s)://`` (or ``file://``) address of the file.
        dest: Final path of the file. Its folder is created if needed.
        md5: Expected hex MD5 of the whole file, or ``None`` to skip verification.
        timeout: Seconds to wait for the server on connect and on each read.
        chunk_size: Bytes read and written per step.
        progress: Optional callback ``progress(bytes_done, bytes_total_or_None)``.

    Returns:
        ``dest``, which then holds the complete, verified file.

    Raises:
        DownloadError: The server answered with an HTTP error, could not be reached, or closed
            the connection early (the partial file is kept so that a rerun resumes), or ``dest``
            already exists with other content.
        ChecksumError: The complete file has the wrong MD5; the partial file is deleted.
    """
    dest = Path(dest)
    md5 = md5.lower() if md5 else None
    if dest.exists():
        if md5 is None or md5_of_file(dest) == md5:
            return dest
        raise DownloadError(
            f"{dest} already exists but its MD5 is {md5_of_file(dest)}, expected {md5} for "
            f"{url}. It is not the expected file: delete or move it and download again."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    offset = part.stat().st_size if part.exists() else 0

    request = urllib.request.Request(url, headers={"User-Agent": "metagrad"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # nothing after the .part: complete, or longer than file
            size = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") or "")
            if size is None or int(size.group(1)) == offset:
                return _finish(part, dest, url, md5)
            part.unlink()
            return download(
                url, dest, md5, timeout=timeout, chunk_size=chunk_size, progress=progress
            )
        raise DownloadError(
            f"downloading {url} failed: the server answered HTTP {e.code} {e.reason}. Check "
            f"the address, or download the file by hand and save it as {dest}."
        ) from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"could not reach {url}: {reason}. Check the network connection (or proxy), or "
            f"download the file by hand and save it as {dest}."
        ) from e

    with response:
        status = getattr(response, "status", 200)
        if status == 206 and _range_start(response) != offset:
            part.unlink(missing_ok=True)  # a range we did not ask for: start over without Range
            response.close()
            return download(
                url, dest, md5, timeout=timeout, chunk_size=chunk_size, progress=progress
            )
        if offset and status == 206:
            mode = "ab"  # server honoured the Range request: append the rest
        else:
            offset, mode = 0, "wb"  # fresh download, or server ignored Range: restart
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        with open(part, mode) as f:
            try:
                while block := response.read(chunk_size):
                    f.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
            except (http.client.IncompleteRead, OSError) as e:
                f.flush()
                raise DownloadError(
                    f"the connection to {url} broke after {done} of {total or '?'} bytes "
                    f"({e!r}). The partial file {part} is kept: run the download again to "
                    "resume it."
                ) from e
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done < total:
        raise DownloadError(
            f"the download of {url} was truncated: the server closed the connection after "
            f"{done} of {total} bytes. The partial file {part} is kept: run the download "
            "again to resume it."
        )
    return _finish(part, dest, url, md5)


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte offset of a ``206 Partial Content`` answer, from ``Content-Range``."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _finish(part: Path, dest: Path, url: str, md5: str | None) -> Path:
    """Verify ``part`` and atomically rename it to ``dest`` (deleting it if the MD5 is wrong)."""
    if md5 is not None:
        got = md5_of_file(part)
        if got != md5:
            size = part.stat().st_size
            part.unlink()
            raise ChecksumError(
                f"checksum mismatch for {url}: expected MD5 {md5}, got {got} ({size} bytes). "
                "The corrupt download was deleted; run the download again. If it keeps "
                "failing, the file on the server changed: download it by hand, check it, and "
                f"save it as {dest}."
            )
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    return dest


def _fsync_dir(folder: Path) -> None:
    """Persist a rename on POSIX (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
