"""CoRBS RGB-D benchmark loader (Wasenmüller et al., "CoRBS: Comprehensive RGB-D Benchmark for SLAM
using Kinect v2", WACV 2016): the TUM RGB-D layout with Kinect v2 intrinsics and another
ground-truth file name, so ``CoRBS`` is a thin configuration of ``kp_vo.datasets.tum.TumRgbd``.

Layout::

    ROOT/rgb.txt, ROOT/depth.txt   "timestamp filename" per line (filenames may use "\\" separators)
    ROOT/rgb/, ROOT/depth/         8-bit colour PNGs and 16-bit depth PNGs, value / 5000 = metres (0 = invalid)
    ROOT/<name>_gt.txt             ground truth "timestamp tx ty tz qx qy qz qw" (T_world_cam), or
    ROOT/groundtruth.txt           the same under the TUM name

Default intrinsics (fx, fy, cx, cy) = (1054.35, 1054.51, 956.12, 548.99) for the 1920x1080 Kinect v2
colour camera. These values were given with the task that added this loader; they could not be checked
against the CoRBS web page here, so override them (``fx``, ``fy``, ``cx``, ``cy`` options) with the
calibration shipped with your download when it differs. Depth must be registered to the colour image
(same size); the raw 512x424 Kinect v2 depth is refused with a one-line error when a frame is loaded.
"""

from __future__ import annotations

from pathlib import Path

from kp_vo.datasets.tum import TumRgbd
from kp_vo.errors import DatasetError

#: (fx, fy, cx, cy) of the CoRBS Kinect v2 colour camera at 1920x1080 (unverified, see module docstring).
CORBS_COLOR_INTRINSICS = (1054.35, 1054.51, 956.12, 548.99)


def corbs_groundtruth_files(root: str | Path) -> list[Path]:
    """The candidate ground-truth files of a CoRBS folder: ``groundtruth.txt`` first, then ``*_gt.txt`` sorted."""
    root = Path(root)
    tum = [root / "groundtruth.txt"] if (root / "groundtruth.txt").is_file() else []
    return tum + sorted(p for p in root.glob("*_gt.txt") if p.is_file())


def looks_like_corbs(root: str | Path) -> bool:
    """A TUM-style folder (rgb.txt) whose ground truth is named ``*_gt.txt`` (and not ``groundtruth.txt``)."""
    root = Path(root)
    return ((root / "rgb.txt").is_file() and not (root / "groundtruth.txt").is_file()
            and any(p.is_file() for p in root.glob("*_gt.txt")))


class CoRBS(TumRgbd):
    """A CoRBS sequence folder (see module docstring); frames carry RGB and float32 depth in metres.

    Options: those of ``TumRgbd`` plus ``groundtruth`` (file name inside the folder, or a path) to pick
    the trajectory when the folder holds several ``*_gt.txt`` files.
    """

    name_prefix = "corbs"

    def __init__(self, root: str | Path, groundtruth: str | Path | None = None, **options):
        self._groundtruth_option = groundtruth
        super().__init__(root, **options)

    def default_intrinsics(self, root: Path) -> tuple[str, tuple[float, float, float, float]]:
        return "corbs-kinect2-color", CORBS_COLOR_INTRINSICS

    def groundtruth_path(self, root: Path) -> Path | None:
        if self._groundtruth_option is not None:
            path = Path(self._groundtruth_option)
            if not path.is_absolute() and (root / path).is_file():
                path = root / path
            if not path.is_file():
                raise DatasetError(f"{path}: ground-truth file not found")
            return path
        found = corbs_groundtruth_files(root)
        if len(found) > 1 and found[0].name != "groundtruth.txt":
            raise DatasetError(f"{root}: several ground-truth files ({', '.join(p.name for p in found)}); "
                               f"choose one with the option groundtruth=NAME")
        return found[0] if found else None
