"""Lightning's data contract: downloads in prepare_data (once per node), file listing in setup (every rank,
the same list), nothing listed or downloaded by the constructor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datamodules import DataError, ImageDataModule
from tests.conftest import write_photos

REPO = Path(__file__).resolve().parents[2]

# Run by `python script.py ROOT`: Lightning's DDP launcher starts rank 1 by running the same script again.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import lightning as L

    import datamodules.datamodule
    from datamodules import ImageDataModule
    from tests.conftest import write_photos

    root = Path(sys.argv[1])

    def counting_download(coco_root, split):  # stands in for the 778 MB archive
        with open(root / "downloads.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        write_photos(coco_root / f"{split}2017", 5)
        return coco_root

    datamodules.datamodule.download_coco = counting_download

    class Listing(L.LightningModule):
        def setup(self, stage):
            files = [str(path) for path in self.trainer.datamodule.images.files]
            (root / f"files{self.global_rank}.json").write_text(json.dumps(files))

        def test_step(self, batch, batch_idx):
            return None

    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, use_distributed_sampler=False,
    )
    data = ImageDataModule("coco", root / "coco", download=True, batch_size=2, num_workers=0, resolution=28)
    trainer.test(Listing(), datamodule=data, verbose=False)
    """
)


def test_two_processes_on_one_node_download_once_and_list_the_same_files(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "downloads.log").read_text().splitlines()) == 1
    listings = [json.loads((tmp_path / f"files{rank}.json").read_text()) for rank in (0, 1)]
    assert listings[0] == listings[1] and len(listings[0]) == 5


def test_the_constructor_lists_and_downloads_nothing(tmp_path: Path) -> None:
    write_photos(tmp_path, 3)
    datamodule = ImageDataModule("folder", tmp_path)
    with pytest.raises(RuntimeError, match="listed in setup"):
        _ = datamodule.images
    datamodule.setup("test")
    assert len(datamodule.images.files) == 3 and datamodule.class_names == ()
    with pytest.raises(DataError, match="does not exist"):
        ImageDataModule("folder", tmp_path / "missing")
