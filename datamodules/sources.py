"""Where images come from: the built-in demo photos and any folder of images."""

from __future__ import annotations

from pathlib import Path

from datamodules.images import UNLABELLED, DataError, ImageList, list_image_files

# real photographs shipped inside scikit-image and scikit-learn (no download needed)
_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def demo_images() -> ImageList:
    """The demo set: photos that ship inside scikit-image and scikit-learn, unlabelled."""
    import skimage.data
    import sklearn.datasets

    candidates = [Path(skimage.data.__file__).parent / name for name in _SKIMAGE_PHOTOS]
    candidates += [Path(sklearn.datasets.__file__).parent / "images" / name for name in _SKLEARN_PHOTOS]
    files = tuple(path for path in candidates if path.is_file())
    if not files:
        raise DataError("no demo photo found in the installed scikit-image / scikit-learn packages")
    return ImageList(files, (UNLABELLED,) * len(files))


def folder_images(root: Path) -> ImageList:
    """Every image under `root`, recursively, except in run folders of this tool.

    When every image lies inside a first-level sub-folder, the sub-folder names are the
    classes (sorted, indexed from 0), as in torchvision's ImageFolder; otherwise unlabelled.
    A run folder left out names no class.
    """
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist or is not a directory")
    listing = list_image_files(root)
    files, run_folders = listing.files, listing.run_folders
    if not files:
        left_out = f" (left out: {len(run_folders)} run folders of this tool)" if run_folders else ""
        raise DataError(f"no image files ({', '.join(('.jpg', '.png', '...'))}) found under {root}{left_out}")
    parents = [path.relative_to(root).parts for path in files]
    if all(len(parts) >= 2 for parts in parents):
        class_names = tuple(sorted({parts[0] for parts in parents}))
        class_index = {name: i for i, name in enumerate(class_names)}
        labels = tuple(class_index[parts[0]] for parts in parents)
        return ImageList(files, labels, class_names, run_folders)
    return ImageList(files, (UNLABELLED,) * len(files), run_folders=run_folders)
