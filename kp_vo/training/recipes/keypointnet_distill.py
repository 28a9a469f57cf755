"""Distil a small KeypointNet (``keypointnet_lite``) from an exported KeypointNet (the teacher, by default
the shipped ``models/keypointnet_kp2d.onnx``) on driving frames and photos.

The teacher runs once per image, through ONNX Runtime, at the size the runtime would feed it (the image
rounded to multiples of 8), on the grey image replicated to three channels (as the runtime feeds a grey
KITTI frame); its outputs are cached under ``<output_dir>/teacher_cache``. A training sample is a crop
of one image at a random position on the 8-pixel cell grid, so the crop's cells are the teacher's cells;
the student sees the crop with photometric jitter (the teacher saw the clean image), and learns per cell:
- score: binary cross-entropy of its logit against the teacher's sigmoid score;
- location: L1 distance (px) between its keypoint and the teacher's, weighted by the teacher's score;
- descriptor: 1 - cosine to the teacher's descriptor, weighted by the teacher's score.
Cells on the outer ring of the crop, and those the teacher masks (outer ring of its image), are left out.

Data (all optional but one): frames of a KITTI odometry sequence (``kitti_sequence``, frames
``kitti_train_frames``; ``kitti_val_frames`` are the validation set and never trained on), image folders
(``image_dirs``, e.g. a KITTI raw drive) and a photo folder split as the homography recipe splits it
(sorted index % ``holdout_every`` == 0 held out).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.datasets.augment import PhotometricConfig, photometric
from kp_vo.datasets.photos import list_photos, split_photos
from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.models import build_model
from kp_vo.training.augment import item_rng
from kp_vo.training.recipe import TrainConfig, config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillLossConfig:
    w_score: float = 1.0          # BCE of the student's score logit against the teacher's score
    w_loc: float = 0.25           # teacher-score-weighted L1 keypoint distance (px)
    w_desc: float = 1.0           # teacher-score-weighted 1 - cosine of the descriptors


@dataclass(frozen=True)
class KeypointDistillConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2000, batch_size=8, lr=2e-3,
                                                                    output_dir="runs/keypointnet_distill"))
    teacher: str = "models/keypointnet_kp2d.onnx"   # exported keypointnet / keypointnet_vgg (.onnx)
    teacher_threads: int = 2                          # ONNX Runtime threads while filling the cache
    widths: tuple[int, int, int] = (16, 32, 64)       # student encoder widths (strides 2, 4, 8)
    head_width: int = 64                              # student head hidden width
    descriptor_dim: int = 64                          # must equal the teacher's
    kitti_root: str = "../shared/data/kitti"          # KITTI odometry root ("" = no KITTI frames)
    kitti_sequence: str = "00"                        # never the evaluation sequence (07)
    kitti_train_frames: tuple[int, int] = (0, 160)    # [first, last) frame indices trained on
    kitti_val_frames: tuple[int, int] = (160, 200)    # [first, last) validation frames (never trained on)
    image_dirs: tuple[str, ...] = ()                  # extra training image folders (all files trained on)
    photo_dir: str = "../shared/data/photos"          # "" = no photos; split by holdout_every
    holdout_every: int = 5
    crop_height: int = 192                            # multiples of 8
    crop_width: int = 384
    samples_per_epoch: int = 100000                   # virtual training-set length (crops are random)
    val_samples: int = 16                             # fixed (seeded) validation crops
    photometric: PhotometricConfig = field(default_factory=lambda: PhotometricConfig(saturation=0.0,
                                                                                     grayscale_p=0.0))
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)


def _kitti_frames(root: str, sequence: str, frames: tuple[int, int]) -> list[Path]:
    folder = Path(root) / "sequences" / sequence / "image_0"
    files = list_photos(folder)
    lo, hi = int(frames[0]), int(frames[1])
    picked = [f for f in files if f.stem.isdigit() and lo <= int(f.stem) < hi]
    if not picked:
        raise DatasetError(f"no frames {lo}..{hi - 1} in {folder}")
    return picked


def read_grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return img


class TeacherCache:
    """The teacher's outputs per image file, computed once and kept in memory and on disk.

    entry(path) -> {"grey": (H, W) uint8 at the teacher's input size, "score": (Hc, Wc) float32,
    "coord": (2, Hc, Wc) float32 pixels, "descriptor": (D, Hc, Wc) float16}."""

    def __init__(self, teacher: str, cache_dir: Path, min_hw: tuple[int, int], threads: int):
        self.teacher_path, self.cache_dir, self.min_hw, self.threads = Path(teacher), Path(cache_dir), min_hw, threads
        if not self.teacher_path.is_file():
            raise InvalidInputError(f"teacher model {teacher} does not exist")
        self._key = hashlib.sha256(self.teacher_path.read_bytes()).hexdigest()[:12]
        self._net = None
        self._mem: dict[Path, dict[str, np.ndarray]] = {}

    def _teacher(self):
        if self._net is None:
            from kp_vo.runtime.extractors import KEYPOINTNET_KINDS
            from kp_vo.runtime.session import OnnxModel
            self._net = OnnxModel(self.teacher_path, expected_kind=KEYPOINTNET_KINDS, device="cpu",
                                  threads=self.threads)
        return self._net

    def _size(self, h: int, w: int) -> tuple[int, int]:
        """The teacher's input size: the image rounded to multiples of 8, enlarged to cover min_hw."""
        s = max(1.0, self.min_hw[0] / h, self.min_hw[1] / w)
        return (max(self.min_hw[0], round(h * s / 8) * 8), max(self.min_hw[1], round(w * s / 8) * 8))

    def entry(self, path: Path) -> dict[str, np.ndarray]:
        path = Path(path)
        if path in self._mem:
            return self._mem[path]
        name = hashlib.sha256(f"{self._key}|{path.resolve()}|{self.min_hw}".encode()).hexdigest()[:20]
        file = self.cache_dir / f"{name}.npz"
        if file.is_file():
            with np.load(file) as z:
                item = {k: z[k] for k in z.files}
        else:
            from kp_vo.runtime.preprocess import image_to_input
            grey = read_grey(path)
            h, w = self._size(*grey.shape)
            grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA if w < grey.shape[1] else cv2.INTER_LINEAR)
            net = self._teacher()
            out = net.run(image_to_input(grey, net.meta, (h, w)))
            item = {"grey": grey, "score": out["score"][0, 0].astype(np.float32),
                    "coord": out["coord"][0].astype(np.float32), "descriptor": out["descriptor"][0].astype(np.float16)}
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(file.stem + ".tmp.npz")
            np.savez(tmp, **item)
            tmp.replace(file)
        self._mem[path] = item
        return item


class DistillCrops(torch.utils.data.Dataset):
    """Items: {"image": (1, h, w) float32 grey [0, 1] with jitter, "score": (1, hc, wc), "coord": (2, hc, wc)
    crop pixels, "descriptor": (D, hc, wc), "valid": (1, hc, wc) 1 where the cell is trained on}.
    ``seed`` None: random crops (training); an int: item i is always the same crop (validation)."""

    def __init__(self, files: list[Path], cache: TeacherCache, cfg: KeypointDistillConfig, length: int,
                 seed: int | None):
        if not files:
            raise DatasetError("no images for this split")
        self.files, self.cache, self.cfg, self.length, self.seed = list(files), cache, cfg, int(length), seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, i)
        cfg = self.cfg
        k = int(rng.integers(len(self.files))) if self.seed is None else int(i) % len(self.files)
        e = self.cache.entry(self.files[k])
        hc, wc = cfg.crop_height // 8, cfg.crop_width // 8
        Hc, Wc = e["score"].shape
        cy, cx = int(rng.integers(0, Hc - hc + 1)), int(rng.integers(0, Wc - wc + 1))
        y0, x0 = 8 * cy, 8 * cx
        grey = e["grey"][y0:y0 + cfg.crop_height, x0:x0 + cfg.crop_width].astype(np.float32) / 255.0
        if self.seed is None:
            grey = photometric(np.repeat(grey[:, :, None], 3, axis=2), rng, cfg.photometric).mean(axis=2)
        valid = np.zeros((Hc, Wc), np.float32)
        valid[1:-1, 1:-1] = 1.0                                      # cells the teacher scores
        valid = valid[cy:cy + hc, cx:cx + wc].copy()
        valid[[0, -1], :] = 0.0                                      # the crop's outer ring
        valid[:, [0, -1]] = 0.0
        coord = e["coord"][:, cy:cy + hc, cx:cx + wc] - np.array([x0, y0], np.float32).reshape(2, 1, 1)
        return {"image": torch.from_numpy(np.ascontiguousarray(grey, np.float32))[None],
                "score": torch.from_numpy(e["score"][cy:cy + hc, cx:cx + wc].copy())[None],
                "coord": torch.from_numpy(np.ascontiguousarray(coord)),
                "descriptor": torch.from_numpy(e["descriptor"][:, cy:cy + hc, cx:cx + wc].astype(np.float32)),
                "valid": torch.from_numpy(valid)[None]}


def distill_loss(student: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: DistillLossConfig
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The three per-cell terms of the module docstring; student outputs in training mode."""
    valid, t_score = batch["valid"], batch["score"]
    n_valid = valid.sum().clamp_min(1.0)
    bce = F.binary_cross_entropy_with_logits(student["score_logit"].float(), t_score, reduction="none")
    l_score = (bce * valid).sum() / n_valid
    w = t_score * valid
    w_sum = w.sum().clamp_min(1e-6)
    dist = (student["coord"].float() - batch["coord"]).abs().sum(1, keepdim=True)          # (B, 1, hc, wc)
    l_loc = (dist * w).sum() / w_sum
    cos = (student["descriptor"].float() * batch["descriptor"]).sum(1, keepdim=True)
    l_desc = ((1.0 - cos) * w).sum() / w_sum
    loss = cfg.w_score * l_score + cfg.w_loc * l_loc + cfg.w_desc * l_desc
    with torch.no_grad():
        # Agreement on the cells that matter to the odometry: of the teacher's best quarter of valid cells,
        # the share that is also in the student's best quarter.
        s = torch.where(valid > 0, student["score_logit"].float(), torch.full_like(t_score, -1e9)).flatten(1)
        t = torch.where(valid > 0, t_score, torch.full_like(t_score, -1.0)).flatten(1)
        k = max(1, int(valid.flatten(1).sum(1).min().item()) // 4)
        top_s = torch.zeros_like(s).scatter_(1, s.topk(k, 1).indices, 1.0)
        top_t = torch.zeros_like(t).scatter_(1, t.topk(k, 1).indices, 1.0)
        overlap = float((top_s * top_t).sum() / top_t.sum())
        loc_top = float((dist.flatten(1) * top_t).sum() / top_t.sum())
    return loss, {"score_bce": l_score.item(), "loc_px": l_loc.item(), "desc_1mcos": l_desc.item(),
                  "top25_overlap": overlap, "loc_px_top25": loc_top}


class KeypointNetDistill:
    """The ``keypointnet_distill`` recipe (see the module docstring)."""

    name = "keypointnet_distill"
    config_type = KeypointDistillConfig

    def __init__(self, config: KeypointDistillConfig):
        if config.crop_height % 8 or config.crop_width % 8 or config.crop_height < 32 or config.crop_width < 32:
            raise InvalidInputError(f"crop size {config.crop_height}x{config.crop_width} must be multiples of 8, "
                                    ">= 32")
        self.config = config
        self._cache: TeacherCache | None = None

    def build_models(self) -> dict[str, nn.Module]:
        c = self.config
        return {"keypointnet_lite": build_model("keypointnet_lite", widths=tuple(c.widths), head_width=c.head_width,
                                                descriptor_dim=c.descriptor_dim)}

    def cache(self) -> TeacherCache:
        if self._cache is None:
            c = self.config
            self._cache = TeacherCache(c.teacher, Path(c.train.output_dir) / "teacher_cache",
                                       (c.crop_height, c.crop_width), c.teacher_threads)
        return self._cache

    def files(self, split: str) -> list[Path]:
        c = self.config
        files: list[Path] = []
        if split == "train":
            if c.kitti_root:
                files += _kitti_frames(c.kitti_root, c.kitti_sequence, c.kitti_train_frames)
            for folder in c.image_dirs:
                files += list_photos(folder)
            if c.photo_dir:
                files += split_photos(list_photos(c.photo_dir), c.holdout_every, "train")
        elif split in ("val", "eval"):
            if c.kitti_root:
                files += _kitti_frames(c.kitti_root, c.kitti_sequence, c.kitti_val_frames)
            elif c.photo_dir:
                files += split_photos(list_photos(c.photo_dir), c.holdout_every, "val")
        else:
            raise InvalidInputError(f"unknown split {split!r}; use 'train' or 'val'")
        if not files:
            raise DatasetError(f"keypointnet_distill: no {split} images (set kitti_root, image_dirs or photo_dir)")
        return files

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        files = self.files(split)
        cache = self.cache()
        for i, f in enumerate(files):                   # fill the teacher cache up front (logged)
            cache.entry(f)
            if (i + 1) % 50 == 0 or i + 1 == len(files):
                log.info("teacher outputs for %s: %d / %d images", split, i + 1, len(files))
        if split == "train":
            return DistillCrops(files, cache, self.config, self.config.samples_per_epoch, seed=None)
        return DistillCrops(files, cache, self.config, self.config.val_samples, seed=self.config.train.seed + 12345)

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        net = models["keypointnet_lite"]
        out = net({"image": (batch["image"] - 0.5) / 0.5})
        if "score_logit" not in out:
            raise InvalidInputError("keypointnet_distill needs the model in training mode (score_logit)")
        return distill_loss(out, batch, self.config.loss)

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        from kp_vo.export.onnx_export import export_module
        path = Path(output_dir) / "keypointnet_lite.onnx"
        model = models["keypointnet_lite"]
        was_training = model.training
        try:
            export_module(model, path, sample_hw=(self.config.crop_height, self.config.crop_width), trained=True,
                          config_hash=config_hash(self.config))
        finally:
            model.train(was_training)
        return [path]


RECIPE = KeypointNetDistill
