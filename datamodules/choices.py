"""The data sources' names, without importing torch or Lightning (the command line's choices)."""

DATA_SOURCES: tuple[str, ...] = ("demo", "folder", "coco", "imagenet")
"""`--data` choices."""


LABELLED_SOURCES: tuple[str, ...] = ("folder", "imagenet")
"""Sources that can have class labels (a folder only when every image lies in a class folder)."""
