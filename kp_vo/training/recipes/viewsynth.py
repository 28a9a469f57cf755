"""ViewSynth recipe: depth-image local features (VGG-16 conv4_3, D2-Net detection) trained on pairs of
depth images with ground-truth poses, with the contrastive descriptor loss L_c and the training-only
View Synthesis Network (GTN + DSN) and its loss L_v: L = L_c + lambda_v L_v.

Data: pairs (i, i + gap) for gap in ``data.gaps`` (10 and 30 frames, as in the paper) of a depth
sequence: the synthetic room (``data.source = "synthetic"``) or any folder that
``kp_vo.datasets.open_sequence`` reads with depth and ground-truth poses -- a 7-Scenes scene
(``data.sequence`` "seq-01", "train", ...) or ``seq-XX`` folder, a CoRBS folder, a TUM RGB-D folder --
resized to height x width (multiples of 8, nearest-neighbour so no depth is invented at edges). The
first ``1 - val_fraction`` of the frames train, the rest validate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.export.onnx_export import export_module
from kp_vo.models import build_model
from kp_vo.training.losses_viewsynth import (
    cell_correspondences,
    contrastive_loss_d2,
    view_synthesis_loss,
)
from kp_vo.training.recipe import TrainConfig, config_hash
from kp_vo.training.vsn import ViewSynthesisNetwork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewSynthDataConfig:
    source: str = "synthetic"          # "synthetic" (room scene) or a dataset folder with depth + poses
                                       # (7-Scenes scene or seq-XX, CoRBS, TUM RGB-D; see open_sequence)
    sequence: str = ""                 # sequence inside ``source`` when it needs one (7-Scenes: "seq-01", "train")
    height: int = 64                   # network input size (multiples of 8)
    width: int = 64
    gaps: tuple[int, ...] = (10, 30)   # frame distances of the pairs
    synthetic_frames: int = 120        # length of the synthetic room sequence
    seed: int = 0
    val_fraction: float = 0.2
    max_frames: int = 0                # use at most this many frames (0 = all)


@dataclass(frozen=True)
class ViewSynthLossConfig:
    margin: float = 1.5                # contrastive margin m (eq. 1)
    tau: float = 4.0                   # negatives only farther than tau feature-map pixels from the match
    vsn_weight: float = 1.0            # lambda_v of the view synthesis loss
    max_rel_depth_error: float = 0.05  # occlusion test of the ground-truth correspondences


@dataclass(frozen=True)
class ViewSynthConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/viewsynth", lr=1e-4))
    data: ViewSynthDataConfig = field(default_factory=ViewSynthDataConfig)
    loss: ViewSynthLossConfig = field(default_factory=ViewSynthLossConfig)
    f_t: int = 96                      # GTN output width


def normalise_depth(depth: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) metres -> [0, 1]: depth / max valid depth per image, invalid stays 0 (runtime rule)."""
    peak = depth.flatten(1).amax(dim=1).clamp(min=1e-6).view(-1, 1, 1, 1)
    return depth / peak


def downsample_depth(depth_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the valid pixels in every 8x8 cell: (B, 1, H, W) -> (values (B, 1, H/8, W/8), valid mask)."""
    valid = (depth_norm > 0).to(depth_norm.dtype)
    s = F.avg_pool2d(depth_norm * valid, 8)
    n = F.avg_pool2d(valid, 8)
    return s / n.clamp(min=1e-6), (n > 0).to(depth_norm.dtype)


class DepthPairDataset(torch.utils.data.Dataset):
    """Depth pairs. Item: "depth1", "depth2" (1, H, W) float32 metres (0 = invalid); "K" (3, 3) float32 of
    the resized images (both views share one camera); "T_2_1" (4, 4) float32 view 1 -> view 2."""

    def __init__(self, sequence, frame_ids: np.ndarray, gaps: tuple[int, ...], height: int, width: int):
        if height % 8 or width % 8:
            raise InvalidInputError(f"ViewSynth input size must be a multiple of 8, got {height}x{width}")
        gt = sequence.ground_truth()
        if gt is None or not sequence.has_depth:
            raise DatasetError(f"{sequence.name}: ViewSynth needs depth images and ground-truth poses")
        self.sequence, self.height, self.width, self.poses = sequence, height, width, np.asarray(gt, np.float64)
        lo, hi = int(frame_ids.min()), int(frame_ids.max())
        known = np.isfinite(self.poses.reshape(len(self.poses), -1)).all(axis=1)   # frames with ground truth
        self.pairs = [(i, i + g) for g in gaps for i in range(lo, hi - g + 1) if known[i] and known[i + g]]
        if not self.pairs:
            raise DatasetError(f"no depth pairs: frames {lo}..{hi} are too few (or lack ground truth) "
                               f"for gaps {tuple(gaps)}")
        cam = sequence.camera
        sx, sy = width / cam.width, height / cam.height
        self.K = np.array([[cam.fx * sx, 0, (cam.cx + 0.5) * sx - 0.5],
                           [0, cam.fy * sy, (cam.cy + 0.5) * sy - 0.5], [0, 0, 1]], np.float32)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _depth(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            d = self.sequence[i].depth
            if d is None:
                raise DatasetError(f"{self.sequence.name}: frame {i} has no depth")
            d = np.nan_to_num(np.asarray(d, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            d[d < 0] = 0
            if d.shape != (self.height, self.width):
                d = cv2.resize(d, (self.width, self.height), interpolation=cv2.INTER_NEAREST)
            self._cache[i] = torch.from_numpy(d)[None]
        return self._cache[i]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, j = self.pairs[k]
        T_2_1 = np.linalg.inv(self.poses[j]) @ self.poses[i]
        return {"depth1": self._depth(i), "depth2": self._depth(j), "K": torch.from_numpy(self.K.copy()),
                "T_2_1": torch.from_numpy(T_2_1.astype(np.float32))}


class ViewSynthRecipe:
    name = "viewsynth"
    config_type = ViewSynthConfig

    def __init__(self, config: ViewSynthConfig):
        self.config = config

    def build_models(self) -> dict[str, nn.Module]:
        """"features": the deployable ViewSynth feature net; "vsn": the training-only synthesis net."""
        return {"features": build_model("viewsynth"), "vsn": ViewSynthesisNetwork(512, self.config.f_t)}

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        if split not in ("train", "val"):
            raise InvalidInputError(f"split must be 'train' or 'val', got {split!r}")
        d = self.config.data
        if d.source == "synthetic":
            from kp_vo.datasets.synthetic import SyntheticSequence
            seq = SyntheticSequence("room", num_frames=d.synthetic_frames, width=d.width, height=d.height, seed=d.seed)
        else:
            from kp_vo.datasets import open_sequence
            seq = open_sequence(d.source, d.sequence or None)
        n = len(seq) if d.max_frames <= 0 else min(len(seq), d.max_frames)
        n_val = round(n * d.val_fraction)
        ids = np.arange(0, n - n_val) if split == "train" else np.arange(n - n_val, n)
        if len(ids) == 0:
            raise DatasetError(f"ViewSynth {split} split is empty ({n} frames)")
        return DepthPairDataset(seq, ids, d.gaps, d.height, d.width)

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config.loss
        net, vsn = models["features"], models["vsn"]
        d1, d2, K, T_2_1 = batch["depth1"], batch["depth2"], batch["K"], batch["T_2_1"]
        B = d1.shape[0]
        # One forward through the (possibly DDP-wrapped) model; a hook keeps the raw backbone features F
        # (the VSN input) besides the model's outputs D = F / |F| and the D2-Net soft score.
        captured: list[torch.Tensor] = []
        hook = getattr(net, "module", net).backbone.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            out_f = net({"image": torch.cat([normalise_depth(d1), normalise_depth(d2)], 0)})
        finally:
            hook.remove()
        feats, desc, score = captured[0], out_f["descriptor"], out_f["score"]             # (2B, 512, h, w) ...
        with torch.no_grad():
            uv2, valid = cell_correspondences(d1, d2, K, K, T_2_1, cfg.max_rel_depth_error)
        l_c, stats = contrastive_loss_d2(desc[:B], desc[B:], score[:B], score[B:], uv2, valid, cfg.margin, cfg.tau)
        out = vsn(feats[:B], d1, d2, K, K, torch.linalg.inv(T_2_1))
        target, target_valid = downsample_depth(normalise_depth(d2))
        l_v = view_synthesis_loss(out["depth"], target, out["frustum"] * target_valid)
        loss = l_c + cfg.vsn_weight * l_v
        return loss, {"loss": float(loss.detach()), "contrastive": float(l_c.detach()), "view_synthesis": float(l_v.detach()),
                      "pos_dist": stats["pos"], "neg_dist": stats["neg"], "matches": stats["matches"]}

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        """Only the feature net ships; the VSN is training-only."""
        d = self.config.data
        return [export_module(models["features"], Path(output_dir) / "viewsynth.onnx", trained=True,
                              config_hash=config_hash(self.config), sample_hw=(d.height, d.width))]


RECIPE = ViewSynthRecipe
