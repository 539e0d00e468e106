"""The data sources' names, without importing torch or Lightning (the command line's choices)."""

DATA_SOURCES: tuple[str, ...] = ("demo", "folder", "coco", "imagenet", "hf")
"""`--data` choices (hf: a Hugging Face dataset, `datamodules.huggingface`)."""


LABELLED_SOURCES: tuple[str, ...] = ("folder", "imagenet", "hf")
"""Sources that can have class labels (a folder only when every image lies in a class folder, a
Hugging Face dataset when it has a label column)."""

SPLITS: tuple[str, ...] = ("val", "train")
"""The splits of COCO and ImageNet (`--split`; the first is the default). A Hugging Face dataset names
its own."""
