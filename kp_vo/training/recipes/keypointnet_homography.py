"""KP2D-style KeypointNet pretraining by homography adaptation on a folder of photos.

Each sample: a random crop of a photo (source) and its warp by a random homography (target), both
with independent photometric jitter; the model sees both and is trained with the KP2D losses
(``kp_vo.training.losses_kp2d``). Photos are split deterministically: sorted by file name, every
``holdout_every``-th file (indices 0, k, 2k, ...) is held out for evaluation and never trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from kp_vo.datasets.augment import HomographyConfig, PhotometricConfig, photometric, sample_homography, warp_image
from kp_vo.datasets.photos import list_photos, split_photos
from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.models import build_model
from kp_vo.training.augment import item_rng
from kp_vo.training.losses_kp2d import KP2DLossConfig, kp2d_loss
from kp_vo.training.recipe import TrainConfig, config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeypointHomographyConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2000, batch_size=4, lr=5e-4,
                                                                    output_dir="runs/keypointnet_homography"))
    model: str = "keypointnet"             # "keypointnet" (KP3D ResNet-18) or "keypointnet_vgg" (KP2D)
    descriptor_dim: int = 64               # 64 or 256
    data_dir: str = "../shared/data/photos"  # folder of images (searched non-recursively)
    holdout_every: int = 5                 # files 0, 5, 10, ... (sorted by name) are held out for eval
    crop_height: int = 256                 # training crop size (multiple of 32 for the ResNet model)
    crop_width: int = 320
    zoom: tuple[float, float] = (1.0, 1.6)  # random zoom of the photo before cropping (>= 1 = covers the crop)
    samples_per_epoch: int = 1000          # virtual length of the training set (samples are random)
    val_samples: int = 16                  # fixed (seeded) validation pairs from held-out photos
    homography: HomographyConfig = field(default_factory=HomographyConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    loss: KP2DLossConfig = field(default_factory=KP2DLossConfig)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] (grey files are replicated to 3 channels)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def random_crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator,
                zoom: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Resize ``image`` so it covers (height, width) times a random zoom, then crop at a random place."""
    h, w = image.shape[:2]
    s = max(height / h, width / w) * rng.uniform(zoom[0], zoom[1])
    nh, nw = max(height, int(np.ceil(h * s))), max(width, int(np.ceil(w * s)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    y0 = int(rng.integers(0, nh - height + 1))
    x0 = int(rng.integers(0, nw - width + 1))
    return resized[y0:y0 + height, x0:x0 + width]


class HomographyPairs(torch.utils.data.Dataset):
    """Items: {"source": (3,H,W) f32 RGB [0,1], "target": (3,H,W), "H_tgt_src": (3,3) f32,
    "target_valid": (1,H,W) f32 1 where the target pixel comes from inside the source}.

    ``seed`` None: random per call (from torch's RNG, so seeded runs and resumes are reproducible);
    an int: item i is always the same (validation)."""

    def __init__(self, files: list[Path], cfg: KeypointHomographyConfig, length: int, seed: int | None):
        if not files:
            raise DatasetError("no images for this split")
        self.files, self.cfg, self.length, self.seed = list(files), cfg, int(length), seed
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def _image(self, k: int) -> np.ndarray:
        if k not in self._cache:
            self._cache[k] = read_rgb(self.files[k])
        return self._cache[k]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, i)
        cfg = self.cfg
        k = int(rng.integers(len(self.files))) if self.seed is None else int(i) % len(self.files)
        crop = random_crop(self._image(k), cfg.crop_height, cfg.crop_width, rng, cfg.zoom)
        H = sample_homography(cfg.crop_height, cfg.crop_width, rng, cfg.homography)
        source = photometric(crop, rng, cfg.photometric)
        warped, valid = warp_image(photometric(crop, rng, cfg.photometric), H)
        return {"source": torch.from_numpy(source).permute(2, 0, 1).contiguous(),
                "target": torch.from_numpy(warped).permute(2, 0, 1).contiguous(),
                "H_tgt_src": torch.from_numpy(H.astype(np.float32)),
                "target_valid": torch.from_numpy(valid.astype(np.float32))[None]}


class KeypointNetHomography:
    """The ``keypointnet_homography`` recipe (see the module docstring)."""

    name = "keypointnet_homography"
    config_type = KeypointHomographyConfig

    def __init__(self, config: KeypointHomographyConfig):
        if config.crop_height % 32 or config.crop_width % 32:
            raise InvalidInputError(f"crop size {config.crop_height}x{config.crop_width} must be multiples of 32")
        if config.model not in ("keypointnet", "keypointnet_vgg"):
            raise InvalidInputError(f"model must be keypointnet or keypointnet_vgg, got {config.model!r}")
        self.config = config
        self._norm = None

    def build_models(self) -> dict[str, nn.Module]:
        model = build_model(self.config.model, descriptor_dim=self.config.descriptor_dim)
        spec = model.spec()
        self._norm = (torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1),
                      torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))
        return {"keypointnet": model}

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        files = split_photos(list_photos(self.config.data_dir), self.config.holdout_every, split)
        if split == "train":
            return HomographyPairs(files, self.config, self.config.samples_per_epoch, seed=None)
        return HomographyPairs(files, self.config, self.config.val_samples, seed=self.config.train.seed + 12345)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB [0, 1] -> the model's normalised input."""
        if self._norm is None:
            self.build_models()
        mean, std = self._norm
        return (image - mean.to(image.device)) / std.to(image.device)

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        net = models["keypointnet"]
        b = batch["source"].shape[0]
        # One forward pass over both views (one DDP forward per step; shared BatchNorm statistics).
        out = net({"image": self.normalize(torch.cat([batch["source"], batch["target"]], 0))})
        if "dense_descriptor" not in out:
            raise InvalidInputError("keypointnet_homography needs the model in training mode (dense_descriptor)")
        source = {k: v[:b].float() for k, v in out.items()}
        target = {k: v[b:].float() for k, v in out.items()}
        return kp2d_loss(source, target, batch["H_tgt_src"].float(), self.config.loss)

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        from kp_vo.export.onnx_export import export_module
        cfg_hash = config_hash(self.config)
        path = Path(output_dir) / f"{self.config.model}_d{self.config.descriptor_dim}.onnx"
        model = models["keypointnet"]
        was_training = model.training
        try:
            export_module(model, path, sample_hw=(self.config.crop_height, self.config.crop_width), trained=True,
                          config_hash=cfg_hash)
        finally:
            model.train(was_training)
        return [path]


RECIPE = KeypointNetHomography
