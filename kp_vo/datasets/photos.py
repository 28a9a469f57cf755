"""A folder of photos, the data of the homography-adaptation keypoint recipes and of the keypoint
evaluation: the images directly in the folder, sorted by file name, and the deterministic split that
holds every ``holdout_every``-th of them (indices 0, k, 2k, ...) out for evaluation."""

from __future__ import annotations

from pathlib import Path

from kp_vo.errors import DatasetError, InvalidInputError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")


def list_photos(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; DatasetError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"no images ({', '.join(PHOTO_SUFFIXES)}) in {folder}")
    return files


def split_photos(files: list[Path], holdout_every: int, split: str) -> list[Path]:
    """The documented split: sorted index i is held out ("val"/"eval") iff i % holdout_every == 0."""
    if holdout_every < 2:
        raise InvalidInputError(f"holdout_every must be >= 2, got {holdout_every}")
    if split == "train":
        return [f for i, f in enumerate(files) if i % holdout_every != 0]
    if split in ("val", "eval"):
        return [f for i, f in enumerate(files) if i % holdout_every == 0]
    raise InvalidInputError(f"unknown split {split!r}; use 'train', 'val' or 'eval'")
