"""COCO listing and the resumable, checksummed download, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import DataError
from datamodules.coco import coco_images
from datamodules.download import COMPLETE_MARKER, download_and_extract


def coco_zip(count: int = 4) -> bytes:
    """A small val2017.zip: one folder of real JPEGs, padded so a download takes several reads."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for i in range(count):
            pixels = np.random.default_rng(i).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
            image = io.BytesIO()
            Image.fromarray(pixels).save(image, format="JPEG", quality=95)
            bundle.writestr(f"val2017/{i:012d}.jpg", image.getvalue())
        bundle.writestr("val2017/padding.bin", np.random.default_rng(9).bytes(3 << 20))
    return buffer.getvalue()


class ArchiveServer(ThreadingHTTPServer):
    """Serves one payload with Range support; `cut_after` bytes into the first response it hangs up."""

    payload: bytes = b""
    cut_after: int | None = None
    requests: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = server.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            self.wfile.write(body[: server.cut_after])
            server.cut_after = None  # only the first response is cut
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    httpd = ArchiveServer(("127.0.0.1", 0), _Handler)
    httpd.payload = coco_zip()
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(server: ArchiveServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/val2017.zip"


def test_download_verifies_and_extracts(server: ArchiveServer, tmp_path: Path) -> None:
    md5 = hashlib.md5(server.payload).hexdigest()
    extracted = download_and_extract(url_of(server), md5, tmp_path / "coco" / "extracted", timeout=10)
    assert (extracted / COMPLETE_MARKER).is_file()
    images = coco_images(extracted)
    assert len(images.files) == 4 and not images.labelled
    assert not (tmp_path / "coco" / "val2017.zip").exists()  # the archive is removed once extracted
    download_and_extract(url_of(server), md5, tmp_path / "coco" / "extracted", timeout=10)
    assert len(server.requests) == 1  # complete: nothing fetched again


def test_wrong_checksum_is_refused_and_leaves_nothing(server: ArchiveServer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="checksum mismatch"):
        download_and_extract(url_of(server), "0" * 32, tmp_path / "extracted", timeout=10)
    assert not (tmp_path / "extracted").exists()
    assert not any(tmp_path.glob("val2017.zip*"))


def test_cut_connection_resumes_with_a_range_request(server: ArchiveServer, tmp_path: Path) -> None:
    server.cut_after = 1 << 20
    md5 = hashlib.md5(server.payload).hexdigest()
    extracted = download_and_extract(url_of(server), md5, tmp_path / "extracted", timeout=10)
    assert len(coco_images(extracted).files) == 4
    assert server.requests[0] is None and server.requests[1] == f"bytes={1 << 20}-"


def test_a_half_extracted_folder_is_redone(server: ArchiveServer, tmp_path: Path) -> None:
    destination = tmp_path / "extracted"
    (destination / "val2017").mkdir(parents=True)  # left by a killed extraction: no marker
    (destination / "val2017" / "000000000000.jpg").write_bytes(b"partial")
    md5 = hashlib.md5(server.payload).hexdigest()
    download_and_extract(url_of(server), md5, destination, timeout=10)
    assert len(coco_images(destination).files) == 4
    assert Image.open(destination / "val2017" / "000000000000.jpg").size == (64, 64)


def test_missing_coco_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="looked for ROOT/val2017/"):
        coco_images(tmp_path)
