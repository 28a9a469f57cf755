"""ViewSynth recipe: depth-image local features (VGG-16 conv4_3, D2-Net detection) trained on pairs of
depth images with ground-truth poses, with the contrastive descriptor loss L_c and the training-only
View Synthesis Network (GTN + DSN) and its loss L_v: L = L_c + lambda_v L_v.

Data: pairs (i, i + gap) for gap in ``data.gaps`` (10 and 30 frames, as in the paper) of depth
sequences: ``data.source = "random_rooms"``: ``data.rooms`` rooms of random layout
(``kp_vo.datasets.random_room``; seeds 0..rooms-1 train, ``data.val_rooms`` others from seed
``VAL_ROOM_SEED`` validate); ``"synthetic"``: the one fixed room; or any folder that
``kp_vo.datasets.open_sequence`` reads with depth and ground-truth poses -- a 7-Scenes scene
(``data.sequence`` "seq-01", "train", ...) or ``seq-XX`` folder, a CoRBS folder, a TUM RGB-D folder --
resized to height x width (multiples of 8, nearest-neighbour so no depth is invented at edges). For a
single sequence the first ``1 - val_fraction`` of the frames train, the rest validate.

The network sees the depth through ``data.sensor_noise`` (``SensorNoiseConfig``: Kinect-like axial
noise, holes at depth edges and a range limit); ground-truth correspondences and the view-synthesis
target use the clean depth.
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


VAL_ROOM_SEED = 100_000   # validation rooms: random_room seeds VAL_ROOM_SEED + k (training uses 0..rooms-1)


@dataclass(frozen=True)
class SensorNoiseConfig:
    """Depth-sensor corruption of the network input (training only; all off = clean depth)."""

    axial: float = 0.0                 # noise std = axial * z^2 (m); Kinect v1 ~ 0.0012-0.0028
    edge_dropout: float = 0.0          # chance a pixel at a depth edge (> 5 % jump to a neighbour) reads 0
    max_range: float = 0.0             # depth beyond this reads 0 (m; 0 = unlimited)


@dataclass(frozen=True)
class ViewSynthDataConfig:
    source: str = "synthetic"          # "random_rooms", "synthetic" (the fixed room) or a dataset folder with
                                       # depth + poses (7-Scenes scene or seq-XX, CoRBS, TUM RGB-D; see open_sequence)
    rooms: int = 8                     # random_rooms: training rooms (seeds 0..rooms-1)
    val_rooms: int = 2                 # random_rooms: validation rooms (seeds VAL_ROOM_SEED + k)
    sequence: str = ""                 # sequence inside ``source`` when it needs one (7-Scenes: "seq-01", "train")
    height: int = 64                   # network input size (multiples of 8)
    width: int = 64
    gaps: tuple[int, ...] = (10, 30)   # frame distances of the pairs
    synthetic_frames: int = 120        # length of each synthetic room sequence
    seed: int = 0
    val_fraction: float = 0.2          # single sequence: the last fraction of its frames validates
    max_frames: int = 0                # use at most this many frames (0 = all)
    sensor_noise: SensorNoiseConfig = field(default_factory=SensorNoiseConfig)


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
    width: int = 64                    # feature net's first VGG block (64 = VGG-16, 512-d descriptors)


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


def corrupt_depth(depth: np.ndarray, noise: SensorNoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 metres (0 = invalid) as a depth sensor might read it (see SensorNoiseConfig);
    a new array, invalid pixels stay 0."""
    out = depth.copy()
    valid = out > 0
    if noise.axial > 0:
        out[valid] += (noise.axial * out[valid] ** 2 * rng.standard_normal(int(valid.sum()))).astype(np.float32)
    if noise.edge_dropout > 0:
        pad = np.pad(depth, 1, mode="edge")
        jump = np.zeros(depth.shape, bool)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            jump |= np.abs(pad[dy:dy + depth.shape[0], dx:dx + depth.shape[1]] - depth) > 0.05 * np.maximum(depth, 1e-6)
        out[jump & (rng.random(depth.shape) < noise.edge_dropout)] = 0
    if noise.max_range > 0:
        out[out > noise.max_range] = 0
    out[~valid | (out < 0)] = 0
    return out


class DepthPairDataset(torch.utils.data.Dataset):
    """Depth pairs. Item: "depth1", "depth2" (1, H, W) float32 metres (0 = invalid); "input1", "input2"
    the same through ``noise`` (the network input; equal to depth1/2 when noise is off); "K" (3, 3)
    float32 of the resized images (both views share one camera); "T_2_1" (4, 4) float32 view 1 -> view 2."""

    def __init__(self, sequence, frame_ids: np.ndarray, gaps: tuple[int, ...], height: int, width: int,
                 noise: SensorNoiseConfig = SensorNoiseConfig()):
        if height % 8 or width % 8:
            raise InvalidInputError(f"ViewSynth input size must be a multiple of 8, got {height}x{width}")
        gt = sequence.ground_truth()
        if gt is None or not sequence.has_depth:
            raise DatasetError(f"{sequence.name}: ViewSynth needs depth images and ground-truth poses")
        self.sequence, self.height, self.width, self.poses = sequence, height, width, np.asarray(gt, np.float64)
        self.noise = noise
        self.noisy = noise.axial > 0 or noise.edge_dropout > 0 or noise.max_range > 0
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
        d1, d2 = self._depth(i), self._depth(j)
        if self.noisy:   # seeded through torch's generator, so DataLoader workers and seeded runs repeat
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
            in1, in2 = (torch.from_numpy(corrupt_depth(d[0].numpy(), self.noise, rng))[None] for d in (d1, d2))
        else:
            in1, in2 = d1, d2
        return {"depth1": d1, "depth2": d2, "input1": in1, "input2": in2, "K": torch.from_numpy(self.K.copy()),
                "T_2_1": torch.from_numpy(T_2_1.astype(np.float32))}


class ViewSynthRecipe:
    name = "viewsynth"
    config_type = ViewSynthConfig

    def __init__(self, config: ViewSynthConfig):
        self.config = config

    def build_models(self) -> dict[str, nn.Module]:
        """"features": the deployable ViewSynth feature net; "vsn": the training-only synthesis net."""
        width = self.config.width
        return {"features": build_model("viewsynth", width=width), "vsn": ViewSynthesisNetwork(8 * width, self.config.f_t)}

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        if split not in ("train", "val"):
            raise InvalidInputError(f"split must be 'train' or 'val', got {split!r}")
        d = self.config.data
        if d.source == "random_rooms":
            return self._random_rooms(split)
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
        return DepthPairDataset(seq, ids, d.gaps, d.height, d.width, d.sensor_noise)

    def _random_rooms(self, split: str) -> torch.utils.data.Dataset:
        """One sequence of ``synthetic_frames`` per room: training rooms 0..rooms-1, validation rooms
        from VAL_ROOM_SEED (never trained on)."""
        from kp_vo.datasets.synthetic import SyntheticSequence, split_seeds

        d = self.config.data
        n = d.synthetic_frames if d.max_frames <= 0 else min(d.synthetic_frames, d.max_frames)
        return torch.utils.data.ConcatDataset([
            DepthPairDataset(SyntheticSequence("random_room", num_frames=n, width=d.width, height=d.height,
                                               seed=seed), np.arange(n), d.gaps, d.height, d.width, d.sensor_noise)
            for seed in split_seeds(split, d.rooms, d.val_rooms, VAL_ROOM_SEED, "room")])

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config.loss
        net, vsn = models["features"], models["vsn"]
        d1, d2, K, T_2_1 = batch["depth1"], batch["depth2"], batch["K"], batch["T_2_1"]
        in1, in2 = batch["input1"], batch["input2"]
        B = d1.shape[0]
        # One forward through the (possibly DDP-wrapped) model; a hook keeps the raw backbone features F
        # (the VSN input) besides the model's outputs D = F / |F| and the D2-Net soft score.
        captured: list[torch.Tensor] = []
        hook = getattr(net, "module", net).backbone.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            out_f = net({"image": torch.cat([normalise_depth(in1), normalise_depth(in2)], 0)})
        finally:
            hook.remove()
        feats, desc, score = captured[0], out_f["descriptor"], out_f["score"]             # (2B, 512, h, w) ...
        with torch.no_grad():
            uv2, valid = cell_correspondences(d1, d2, K, K, T_2_1, cfg.max_rel_depth_error)
        l_c, stats = contrastive_loss_d2(desc[:B], desc[B:], score[:B], score[B:], uv2, valid, cfg.margin, cfg.tau)
        out = vsn(feats[:B], in1, d2, K, K, torch.linalg.inv(T_2_1))
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
