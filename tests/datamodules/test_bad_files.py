"""Every kind of awkward file: converted when it can be, skipped and listed when it cannot."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from cls_decoupling.cli import evaluate
from datamodules import folder_images
from datamodules.images import load_rgb
from tests.conftest import tiny_model

RNG = np.random.default_rng(0)


def rgb(height: int = 40, width: int = 56) -> np.ndarray:
    return RNG.integers(0, 255, size=(height, width, 3), dtype=np.uint8)


def huge_png_header(path: Path, side: int = 40_000) -> None:
    """A PNG whose header claims side x side pixels (a decompression bomb) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def write_awkward_folder(root: Path) -> tuple[list[str], list[str]]:
    """(good, bad) file names, in two class folders; returns the names as they sort."""
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir(parents=True)
    Image.fromarray(rgb()).save(cats / "a_plain.jpg")
    Image.fromarray(rgb()).convert("CMYK").save(cats / "b_cmyk.jpg")
    Image.fromarray(rgb()).convert("L").save(cats / "c_gray.png")
    Image.fromarray(rgb()).convert("P", palette=Image.Palette.ADAPTIVE).save(
        cats / "d_palette.png", transparency=0
    )
    rgba = np.dstack([rgb(), np.full((40, 56), 128, dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(cats / "e_rgba.png")
    Image.fromarray((RNG.integers(0, 65535, size=(40, 56))).astype(np.uint16)).save(cats / "f_16bit.png")
    rotated = Image.fromarray(rgb(30, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated.save(cats / "g_exif.jpg", exif=exif)
    Image.fromarray(rgb(1200, 1600)).save(dogs / "h_large.jpg", quality=90)
    good = ["a_plain.jpg", "b_cmyk.jpg", "c_gray.png", "d_palette.png", "e_rgba.png", "f_16bit.png",
            "g_exif.jpg", "h_large.jpg"]  # fmt: skip
    (dogs / "i_zero.jpg").write_bytes(b"")
    full = dogs / "j_truncated.jpg"
    Image.fromarray(rgb(200, 200)).save(full, quality=95)
    full.write_bytes(full.read_bytes()[:300])
    (dogs / "k_text.png").write_text("this is not an image")
    huge_png_header(dogs / "l_huge.png")
    Image.fromarray(rgb()).save(dogs / "m_after.jpg")
    good.append("m_after.jpg")
    return good, ["i_zero.jpg", "j_truncated.jpg", "k_text.png", "l_huge.png"]


def test_conversions(tmp_path: Path) -> None:
    write_awkward_folder(tmp_path)
    for name in ("b_cmyk.jpg", "c_gray.png", "d_palette.png", "e_rgba.png", "f_16bit.png"):
        image = load_rgb(tmp_path / "cats" / name)
        assert image.mode == "RGB" and image.size == (56, 40), name
    sixteen = np.asarray(load_rgb(tmp_path / "cats" / "f_16bit.png"))
    assert 100 < sixteen.mean() < 155  # scaled from 16 bits, not clipped to white
    assert load_rgb(tmp_path / "cats" / "g_exif.jpg").size == (30, 60)  # EXIF rotation applied
    alpha = np.asarray(load_rgb(tmp_path / "cats" / "e_rgba.png")).astype(float)
    assert alpha.min() >= 126  # half-transparent over white
    drafted = load_rgb(tmp_path / "dogs" / "h_large.jpg", min_side=256)
    assert min(drafted.size) >= 256 and drafted.size[0] < 1600  # decoded at a reduced JPEG scale


def test_a_run_over_bad_files_completes_and_lists_them(tmp_path: Path) -> None:
    good, bad = write_awkward_folder(tmp_path / "data")
    model = tmp_path / "model"
    tiny_model(registers=0, hidden=32, heads=2, patch=14, image=56).save_pretrained(model)
    images = folder_images(tmp_path / "data")
    names = [path.name for path in images.files]
    argv = ["--backbone", str(model), "--data", "folder", "--data-dir", str(tmp_path / "data"),
            "--probe", "split", "--resolution", "56", "--batch-size", "3", "--num-workers", "2",
            "--save-features", "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["data"]["num_images"] == len(good) and summary["data"]["num_skipped"] == len(bad)
    skipped = {names[entry["index"]] for entry in summary["data"]["skipped"]}
    assert skipped == set(bad)
    features = load_file(str(tmp_path / "run" / "features.safetensors"))
    assert [names[i] for i in features["index"]] == sorted(good, key=names.index)  # indices unchanged
    for index, label in zip(features["index"], features["label"], strict=True):
        assert label == images.labels[index]  # labels unchanged


@pytest.mark.parametrize("kind", ["zero", "text"])
def test_every_image_bad_is_a_failure_that_writes_nothing(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipeline sees the failure (exit 2, one line naming the files), and no run folder appears
    (an earlier run there would stay as it was)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"" if kind == "zero" else b"text")
    model = tmp_path / "model"
    tiny_model(hidden=32, heads=2, patch=14, image=56).save_pretrained(model)
    argv = ["--backbone", str(model), "--data", "folder", "--data-dir", str(folder), "--probe", "split",
            "--resolution", "56", "--num-workers", "0", "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "no image could be read (1 skipped, e.g. 0: " in errors[0]
        and "x.jpg" in errors[0]
    )
    assert not (tmp_path / "run").exists()
