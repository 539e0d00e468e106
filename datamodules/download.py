"""Resumable, checksummed download of a zip archive, extracted so that a half-done job never looks done."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from datamodules.images import DataError

_CHUNK = 1 << 20
COMPLETE_MARKER = ".complete"


def download_and_extract(
    url: str, md5: str, destination: Path, attempts: int = 5, timeout: float = 60.0
) -> Path:
    """Make `destination` hold the extracted archive at `url`, downloading only what is missing.

    The archive is fetched to `destination.parent/<name>.part`, resumed with an HTTP Range
    request after a cut connection (up to `attempts` tries), verified against `md5`, extracted
    into a temporary folder beside `destination`, and moved into place with a marker file
    inside: `destination` is either absent, or complete. The archive is then deleted.

    Raises:
        DataError: the checksum does not match (the partial file is removed) or the download
            keeps failing.
    """
    if (destination / COMPLETE_MARKER).is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    archive = destination.parent / (url.rsplit("/", 1)[-1] or "download.zip")
    if not archive.is_file():
        _fetch(url, archive.with_name(archive.name + ".part"), attempts, timeout)
        archive.with_name(archive.name + ".part").rename(archive)
    digest = _md5(archive)
    if digest != md5:
        archive.unlink()
        raise DataError(
            f"checksum mismatch for {url}: got md5 {digest}, expected {md5}; the file was removed"
        )
    staging = Path(tempfile.mkdtemp(prefix=destination.name + ".", dir=destination.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        (staging / COMPLETE_MARKER).write_text(md5 + "\n")
        if destination.exists():  # an earlier, incomplete extraction (no marker)
            shutil.rmtree(destination)
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()  # extracted and verified: the archive is no longer needed
    return destination


def _fetch(url: str, part: Path, attempts: int, timeout: float) -> None:
    """Append to `part` until the server says the file is complete, resuming after a cut."""
    last_error: Exception | None = None
    with Progress(
        *Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:
        task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=None)
        for _ in range(attempts):
            have = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if have and response.status != 206:  # server ignored the range: start over
                        have = 0
                    total = have + int(response.headers.get("Content-Length", 0) or 0)
                    bar.update(task, total=total or None, completed=have)
                    with part.open("ab" if have else "wb") as handle:
                        while chunk := response.read(_CHUNK):
                            handle.write(chunk)
                            bar.advance(task, len(chunk))
                if not total or part.stat().st_size >= total:
                    return
            except urllib.error.HTTPError as error:
                if error.code == 416 and have:  # nothing left to fetch
                    return
                last_error = error
            except (urllib.error.URLError, OSError) as error:
                last_error = error
    raise DataError(f"could not download {url} after {attempts} attempts: {last_error}")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
