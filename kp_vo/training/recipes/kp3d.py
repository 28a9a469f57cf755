"""KP3D multi-view adaptation recipe (KP3D §3, §4.1): DepthNet + KeypointNet trained jointly on
monocular snippets (I_{t-dt}, I_t, I_{t+dt}), dt in {1, 2, 4}.

L = L_depth + alpha L_kpn,  L_kpn = L_geom + b1 L_desc + b2 L_score,
L_depth = L_photo (SSIM + L1, gamma = 0.85, auto-masked) + b3 L_smooth + b4 L_const.
As in KP3D §4.1, the KeypointNet also trains by homography adaptation from the target frame: L_kpn gains
``augment.homography_weight`` times the KP2D loss (``kp_vo.training.losses_kp2d``) of the pair (I_t, H(I_t)),
and the KeypointNet sees photometrically jittered copies of every frame (noise, colour jitter, blur), while
DepthNet and the photometric loss keep the raw frames.
The pose target->context comes from RANSAC-PnP on detached keypoints refined by the differentiable
Procrustes residual pose (``kp_vo.training.losses_kp3d``); ground-truth poses are only logged
(scale-free rotation / translation-direction errors), unless ``loss.pose_source = "gt"``.
As in the paper, start from pretrained nets (``model.keypointnet_weights`` from the homography
recipe, ``model.depthnet_weights`` from the ``depthnet_selfsup`` recipe's ``weights/depthnet.safetensors``;
keep its ``model.min_depth`` / ``max_depth``): from random weights the keypoint pose has nothing to anchor it
and tends to collapse to near-zero motion (measured: translation-direction error ~88 deg after 30 steps).

KeypointNet form (``model.keypointnet_kind``): the paper's ResNet-18 ``keypointnet`` or the KP2D VGG form
``keypointnet_vgg`` (the shipped default model, ``models/keypointnet_kp2d.safetensors``, float16 weights that
load as float32; its dense descriptors have stride 4 and ``model.descriptor_stride`` does not apply).
``model.keypointnet_frozen_bn`` keeps the KeypointNet's BatchNorm in eval mode (running statistics used and
not updated, affine parameters still trained): for fine-tuning a pretrained KeypointNet on small batches.

Data: a KITTI odometry sequence folder (``data.source`` = the dataset root holding ``sequences/``),
the synthetic street sequence (``data.source = "synthetic"``), or many synthetic streets
(``"synthetic_streets"``: streets of seeds 0..streets-1 train, ``val_streets`` from ``VAL_STREET_SEED``
validate), resized to ``data.height x data.width`` (multiples of 32). Split of one sequence: the first
``1 - val_fraction`` of the frames train, the rest validate. ``data.extra_train`` adds whole sequences
(paths ``kp_vo.datasets.open_sequence`` opens, e.g. a KITTI raw drive folder) to the training snippets only.
Augmentation for small real sets: ``augment.flip_p`` mirrors training snippets left-right (frames,
intrinsics, ground-truth poses: ``mirror_snippet``, shared with the ``depthnet_selfsup`` recipe), and
``augment.photos_dir`` adds to every snippet one KP2D homography pair cropped from a folder of photos
(``augment.photos_weight`` times its KP2D loss inside L_kpn; the photos split as the ``keypointnet_homography``
recipe splits them: held-out photos, sorted index i % ``photos_holdout_every`` == 0, give the validation pairs
and are never trained on). ``config/train_kp3d_kitti_cpu.yaml`` uses all of this on KITTI 00 + the raw drive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.datasets.augment import HomographyConfig, PhotometricConfig, photometric, sample_homography, warp_image
from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.export.onnx_export import export_module
from kp_vo.models import build_model
from kp_vo.models.checkpoints import load_initial_weights
from kp_vo.training.augment import item_rng
from kp_vo.training.losses_kp2d import KP2DLossConfig, kp2d_loss
from kp_vo.training.losses_kp3d import KeypointLossConfig, keypoint_pair_losses
from kp_vo.training.photometric import multiscale_photometric_loss
from kp_vo.training.procrustes_torch import rotation_angular_distance
from kp_vo.training.recipe import OMIT_DEFAULT_FROM_HASH, TrainConfig, config_hash


VAL_STREET_SEED = 100_000   # validation streets: street seeds VAL_STREET_SEED + k (training uses 0..streets-1)


@dataclass(frozen=True)
class Kp3dDataConfig:
    source: str = "synthetic"          # "synthetic" (one street), "synthetic_streets" or a KITTI odometry root
    sequence: str = "07"               # KITTI sequence name
    height: int = 64                   # network input size (multiples of 32)
    width: int = 96
    dts: tuple[int, ...] = (1, 2, 4)   # frame offsets of the context images
    synthetic_frames: int = 40         # length of the synthetic street sequence
    seed: int = 0                      # synthetic scene seed
    streets: int = 8                   # synthetic_streets: training streets (seeds 0..streets-1)
    val_streets: int = 2               # synthetic_streets: validation streets (seeds VAL_STREET_SEED + k)
    val_fraction: float = 0.2          # last part of the sequence held out for validation (one sequence)
    max_frames: int = 0                # use at most this many frames (0 = all)
    extra_train: tuple[str, ...] = field(default=(), metadata=OMIT_DEFAULT_FROM_HASH)
                                       # more training sequences, whole (paths open_sequence opens: a KITTI
                                       # raw drive folder, a KITTI odometry sequence folder); never validated on


@dataclass(frozen=True)
class Kp3dLossConfig:
    alpha: float = 0.1                 # weight of L_kpn in L = L_depth + alpha L_kpn
    beta1: float = 1.0                 # L_desc
    beta2: float = 1.0                 # L_score
    beta3: float = 0.1                 # L_smooth (mean-normalised inverse depth, so scale-free like every term)
    beta4: float = 0.1                 # L_const
    gamma: float = 0.85                # SSIM share of the photometric error
    automask: bool = True              # mask static pixels (warped error >= unwarped error)
    pose_source: str = "keypoints"     # pose for the photometric / descriptor warps: "keypoints" (PnP + Procrustes,
                                       # the paper) or "gt" (ground-truth relative pose: depth pretraining with
                                       # known poses; L_geom still trains the keypoint pose)
    keypoints: KeypointLossConfig = field(default_factory=KeypointLossConfig)


@dataclass(frozen=True)
class Kp3dModelConfig:
    descriptor_dim: int = 64           # KeypointNet descriptor size (64 or 256)
    descriptor_stride: int = 2         # dense descriptor map stride (2 or 4)
    min_depth: float = 0.1             # DepthNet output range (m, up to scale)
    max_depth: float = 100.0
    depthnet_width: int = 64           # DepthNet encoder width (64 = ResNet-18); match the pretrained weights
    keypointnet_weights: str = ""      # .safetensors to start from (e.g. the keypointnet_homography run); "" = random
    depthnet_weights: str = ""         # .safetensors of a pretrained DepthNet; "" = random
    keypointnet_kind: str = field(default="keypointnet", metadata=OMIT_DEFAULT_FROM_HASH)
                                       # "keypointnet" (KP3D ResNet-18, descriptor_stride 2 or 4) or
                                       # "keypointnet_vgg" (KP2D VGG form, the shipped default; stride 4)
    keypointnet_frozen_bn: bool = field(default=False, metadata=OMIT_DEFAULT_FROM_HASH)
                                       # KeypointNet BatchNorm in eval mode while training (fine-tuning)


@dataclass(frozen=True)
class Kp3dAugmentConfig:
    """The KeypointNet's augmentation (KP3D §4.1: homography adaptation from the target image, per-pixel
    Gaussian noise, colour jitter and Gaussian blur). Both parts off = the multi-view losses alone."""

    homography_weight: float = 1.0     # weight of the KP2D loss of (I_t, H(I_t)) inside L_kpn (0 = no homography pair)
    jitter: bool = True                # the KeypointNet sees jittered frames (DepthNet and L_photo the raw ones)
    homography: HomographyConfig = field(default_factory=HomographyConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    kp2d: KP2DLossConfig = field(default_factory=KP2DLossConfig)
    flip_p: float = field(default=0.0, metadata=OMIT_DEFAULT_FROM_HASH)
                                       # probability of mirroring a training snippet left-right
    photos_dir: str = field(default="", metadata=OMIT_DEFAULT_FROM_HASH)
                                       # folder of photos for an extra homography pair per snippet ("" = none)
    photos_weight: float = field(default=1.0, metadata=OMIT_DEFAULT_FROM_HASH)
                                       # weight of the photo pair's KP2D loss inside L_kpn
    photos_holdout_every: int = field(default=5, metadata=OMIT_DEFAULT_FROM_HASH)
                                       # photos with sorted index i % this == 0 are held out (validation)
    photos_crop: tuple[int, int] = field(default=(128, 160), metadata=OMIT_DEFAULT_FROM_HASH)
                                       # photo crop height, width (multiples of 32)


@dataclass(frozen=True)
class Kp3dConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/kp3d", lr=2e-4))
    data: Kp3dDataConfig = field(default_factory=Kp3dDataConfig)
    loss: Kp3dLossConfig = field(default_factory=Kp3dLossConfig)
    model: Kp3dModelConfig = field(default_factory=Kp3dModelConfig)
    augment: Kp3dAugmentConfig = field(default_factory=Kp3dAugmentConfig)


def _open_sequence(cfg: Kp3dDataConfig):
    if cfg.source == "synthetic":
        from kp_vo.datasets.synthetic import SyntheticSequence
        return SyntheticSequence("street", num_frames=cfg.synthetic_frames, width=cfg.width, height=cfg.height,
                                 seed=cfg.seed)
    from kp_vo.datasets import open_sequence
    return open_sequence(cfg.source, cfg.sequence)


class SnippetDataset(torch.utils.data.Dataset):
    """Snippets (I_{t-dt}, I_t, I_{t+dt}) of a monocular sequence, resized to (height, width).

    Item: "target" (3, H, W) float32 RGB in [0, 1]; "context" (2, 3, H, W) = frames t - dt, t + dt;
    "K" (3, 3) float32 intrinsics of the resized images; "dt" () int64;
    "T_c_t_gt" (2, 4, 4) float32 ground-truth target->context poses (identity when unknown);
    "has_gt" () bool, whether the sequence has ground-truth poses.
    Shared by the ``kp3d`` and ``depthnet_selfsup`` recipes (built by ``snippet_dataset``).
    """

    def __init__(self, sequence, frame_ids: np.ndarray, dts: tuple[int, ...], height: int, width: int):
        if height % 32 or width % 32:
            raise InvalidInputError(f"snippet input size must be a multiple of 32, got {height}x{width}")
        self.sequence, self.height, self.width = sequence, height, width
        lo, hi = int(frame_ids.min()), int(frame_ids.max())
        self.items = [(t, dt) for dt in dts for t in range(lo + dt, hi - dt + 1)]
        if not self.items:
            raise DatasetError(f"no snippets: frames {lo}..{hi} are too few for dt in {tuple(dts)}")
        cam = sequence.camera
        sx, sy = width / cam.width, height / cam.height
        # pixel centres at integers: u' = sx (u + 0.5) - 0.5
        self.K = np.array([[cam.fx * sx, 0, (cam.cx + 0.5) * sx - 0.5],
                           [0, cam.fy * sy, (cam.cy + 0.5) * sy - 0.5], [0, 0, 1]], np.float32)
        gt = sequence.ground_truth()
        self.poses = None if gt is None else np.asarray(gt, np.float64)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            img = self.sequence[i].image
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            if img.shape[:2] != (self.height, self.width):
                img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
            self._cache[i] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)   # uint8: 4x less memory
        return self._cache[i].float() / 255.0

    def _rel(self, t: int, c: int) -> np.ndarray:
        if self.poses is None:
            return np.eye(4, dtype=np.float32)
        return (np.linalg.inv(self.poses[c]) @ self.poses[t]).astype(np.float32)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        t, dt = self.items[k]
        return {"target": self._image(t), "context": torch.stack([self._image(t - dt), self._image(t + dt)]),
                "K": torch.from_numpy(self.K.copy()), "dt": torch.tensor(dt),
                "T_c_t_gt": torch.from_numpy(np.stack([self._rel(t, t - dt), self._rel(t, t + dt)])),
                "has_gt": torch.tensor(self.poses is not None)}


def snippet_dataset(cfg: Kp3dDataConfig, split: str) -> torch.utils.data.Dataset:
    """The ``split`` snippets of the data ``cfg`` names: of one sequence, "train" = its first
    1 - val_fraction of the frames and "val" = the rest; of ``synthetic_streets``, whole streets
    (training seeds 0..streets-1, validation seeds from VAL_STREET_SEED, never trained on)."""
    if split not in ("train", "val"):
        raise InvalidInputError(f"split must be 'train' or 'val', got {split!r}")
    if cfg.source == "synthetic_streets":
        return _synthetic_streets(cfg, split)
    seq = _open_sequence(cfg)
    n = len(seq) if cfg.max_frames <= 0 else min(len(seq), cfg.max_frames)
    n_val = round(n * cfg.val_fraction)
    ids = np.arange(0, n - n_val) if split == "train" else np.arange(n - n_val, n)
    if len(ids) == 0:
        raise DatasetError(f"{split} split is empty ({n} frames, val_fraction {cfg.val_fraction})")
    main = SnippetDataset(seq, ids, cfg.dts, cfg.height, cfg.width)
    if split == "val" or not cfg.extra_train:
        return main
    from kp_vo.datasets import open_sequence
    extra = [open_sequence(path) for path in cfg.extra_train]
    return torch.utils.data.ConcatDataset([main] + [SnippetDataset(s, np.arange(len(s)), cfg.dts, cfg.height,
                                                                   cfg.width) for s in extra])


def _synthetic_streets(cfg: Kp3dDataConfig, split: str) -> torch.utils.data.ConcatDataset:
    from kp_vo.datasets.synthetic import SyntheticSequence, split_seeds

    n = cfg.synthetic_frames if cfg.max_frames <= 0 else min(cfg.synthetic_frames, cfg.max_frames)
    return torch.utils.data.ConcatDataset([
        SnippetDataset(SyntheticSequence("street", num_frames=n, width=cfg.width, height=cfg.height, seed=seed),
                       np.arange(n), cfg.dts, cfg.height, cfg.width)
        for seed in split_seeds(split, cfg.streets, cfg.val_streets, VAL_STREET_SEED, "street")])


class KeypointAugmentedSnippets(torch.utils.data.Dataset):
    """Snippets (``SnippetDataset`` items) plus the KeypointNet's augmented inputs (KP3D §4.1).

    Adds, when ``cfg.jitter`` is on, "kpn_target" (3, H, W) and "kpn_context" (2, 3, H, W): independently
    jittered copies of the frames (without them the KeypointNet sees the raw frames), and, when
    ``cfg.homography_weight`` > 0, "homography_view" (3, H, W): the target warped by a random "H_tgt_src"
    (3, 3) float32 and jittered on its own (pixels from outside the target are 0). ``seed``: as for
    ``kp_vo.training.augment.item_rng`` (None = random per call; an int = fixed validation items).
    """

    def __init__(self, snippets: torch.utils.data.Dataset, cfg: Kp3dAugmentConfig, seed: int | None):
        self.snippets, self.cfg, self.seed = snippets, cfg, seed

    def __len__(self) -> int:
        return len(self.snippets)

    def _jitter(self, image: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
        x = image.permute(1, 2, 0).numpy()
        return photometric(x, rng, self.cfg.photometric) if self.cfg.jitter else np.ascontiguousarray(x)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        item = dict(self.snippets[k])
        rng = item_rng(self.seed, k)
        def chw(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)
        if self.cfg.jitter:
            item["kpn_target"] = chw(self._jitter(item["target"], rng))
            item["kpn_context"] = torch.stack([chw(self._jitter(c, rng)) for c in item["context"]])
        if self.cfg.homography_weight > 0:
            h, w = item["target"].shape[-2:]
            H = sample_homography(h, w, rng, self.cfg.homography)
            warped, _ = warp_image(self._jitter(item["target"], rng), H)
            item["homography_view"] = chw(warped)
            item["H_tgt_src"] = torch.from_numpy(H.astype(np.float32))
        return item


_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def mirror_snippet(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``SnippetDataset`` item mirrored left-right: frames flipped, cx -> W - 1 - cx, ground-truth poses
    conjugated by diag(-1, 1, 1, 1) (the mirrored world is a world the camera could have moved through)."""
    item = dict(item)
    item["target"], item["context"] = item["target"].flip(-1), item["context"].flip(-1)
    K = item["K"].clone()
    K[0, 2] = item["target"].shape[-1] - 1 - K[0, 2]
    item["K"] = K
    item["T_c_t_gt"] = _MIRROR @ item["T_c_t_gt"] @ _MIRROR
    return item


class MirroredSnippets(torch.utils.data.Dataset):
    """Snippet items mirrored (``mirror_snippet``) with probability ``flip_p``, drawn afresh per call."""

    def __init__(self, snippets: torch.utils.data.Dataset, flip_p: float):
        self.snippets, self.flip_p = snippets, float(flip_p)

    def __len__(self) -> int:
        return len(self.snippets)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        item = self.snippets[k]
        return mirror_snippet(item) if item_rng(None, k).random() < self.flip_p else item


class PhotoPairSnippets(torch.utils.data.Dataset):
    """Snippet items plus one KP2D homography pair cropped from a photo: "photo_source", "photo_target"
    (3, h, w) float32 RGB in [0, 1] (``cfg.photos_crop``), "photo_H" (3, 3) float32 mapping source pixels to
    target pixels. Training draws a random training photo per call; validation (``seed`` an int) gives item k
    a fixed pair from the held-out photo k % (number of held-out photos)."""

    def __init__(self, snippets: torch.utils.data.Dataset, cfg: Kp3dAugmentConfig, split: str, seed: int | None):
        from kp_vo.datasets.photos import list_photos, split_photos
        from kp_vo.training.recipes.keypointnet_homography import HomographyPairs, KeypointHomographyConfig
        h, w = cfg.photos_crop
        if h % 32 or w % 32:
            raise InvalidInputError(f"augment.photos_crop {h}x{w} must be multiples of 32")
        files = split_photos(list_photos(cfg.photos_dir), cfg.photos_holdout_every, split)
        pairs_cfg = KeypointHomographyConfig(data_dir=cfg.photos_dir, crop_height=h, crop_width=w,
                                             homography=cfg.homography, photometric=cfg.photometric)
        self.snippets, self.pairs = snippets, HomographyPairs(files, pairs_cfg, len(snippets), seed)

    def __len__(self) -> int:
        return len(self.snippets)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        item, pair = dict(self.snippets[k]), self.pairs[k]
        item.update(photo_source=pair["source"], photo_target=pair["target"], photo_H=pair["H_tgt_src"])
        return item


def normalise_input(image: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] -> the model's input normalisation (its spec's mean / std)."""
    spec = getattr(model, "module", model).spec()        # unwrap DistributedDataParallel
    mean = torch.tensor(spec.mean, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    return (image - mean) / std


def scale_free_pose_errors(T_c_t: torch.Tensor, T_c_t_gt: torch.Tensor) -> tuple[float, float]:
    """Mean rotation error and translation-direction error (degrees) of (B, 4, 4) estimated poses against
    ground truth; the translation's length is ignored (monocular: no scale)."""
    r_err = torch.rad2deg(rotation_angular_distance(T_c_t[:, :3, :3].detach(), T_c_t_gt[:, :3, :3])).mean()
    cos = F.cosine_similarity(T_c_t[:, :3, 3].detach(), T_c_t_gt[:, :3, 3], dim=-1, eps=1e-9).clamp(-1, 1)
    return float(r_err), float(torch.rad2deg(torch.acos(cos)).mean())


class Kp3dRecipe:
    name = "kp3d"
    config_type = Kp3dConfig

    def __init__(self, config: Kp3dConfig):
        self.config = config

    def build_models(self) -> dict[str, nn.Module]:
        m = self.config.model
        if self.config.loss.pose_source not in ("keypoints", "gt"):
            raise InvalidInputError(f"loss.pose_source must be 'keypoints' or 'gt', got {self.config.loss.pose_source!r}")
        if self.config.augment.homography_weight < 0:
            raise InvalidInputError(f"augment.homography_weight must be >= 0, got {self.config.augment.homography_weight}")
        if m.keypointnet_kind == "keypointnet":
            kpn = build_model("keypointnet", descriptor_dim=m.descriptor_dim, descriptor_stride=m.descriptor_stride)
        elif m.keypointnet_kind == "keypointnet_vgg":
            kpn = build_model("keypointnet_vgg", descriptor_dim=m.descriptor_dim)
        else:
            raise InvalidInputError(f"model.keypointnet_kind must be 'keypointnet' or 'keypointnet_vgg', "
                                    f"got {m.keypointnet_kind!r}")
        if not 0.0 <= self.config.augment.flip_p <= 1.0:
            raise InvalidInputError(f"augment.flip_p must be in [0, 1], got {self.config.augment.flip_p}")
        models = {"keypointnet": kpn,
                  "depthnet": build_model("depthnet", min_depth=m.min_depth, max_depth=m.max_depth,
                                          width=m.depthnet_width)}
        load_initial_weights(models, {"keypointnet": m.keypointnet_weights, "depthnet": m.depthnet_weights}, "KP3D")
        return models

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        aug = self.config.augment
        snippets = snippet_dataset(self.config.data, split)
        seed = None if split == "train" else self.config.train.seed + 54321
        if split == "train" and aug.flip_p > 0:
            snippets = MirroredSnippets(snippets, aug.flip_p)
        if aug.homography_weight > 0 or aug.jitter:
            snippets = KeypointAugmentedSnippets(snippets, aug, seed=seed)
        if aug.photos_dir:
            snippets = PhotoPairSnippets(snippets, aug, split, seed=seed)
        return snippets

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config.loss
        kpn, dn = models["keypointnet"], models["depthnet"]
        if self.config.model.keypointnet_frozen_bn:       # running statistics used, not updated
            for mod in kpn.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        target, context, K = batch["target"], batch["context"], batch["K"]
        B = target.shape[0]
        n_ctx = context.shape[1]
        def frames(t, ctx):   # (B, 3, H, W), (B, n, 3, H, W) -> (B(1+n), 3, H, W): target first, then each context
            return torch.cat([t, ctx.transpose(0, 1).reshape(-1, *t.shape[1:])], 0)
        kpn_images = frames(batch.get("kpn_target", target), batch.get("kpn_context", context))
        homography = "homography_view" in batch
        if homography:    # one forward for every KeypointNet input (shared BatchNorm statistics)
            kpn_images = torch.cat([kpn_images, batch["homography_view"]], 0)
        kp_all = kpn({"image": normalise_input(kpn_images, kpn)})
        inv_scales = dn({"image": normalise_input(frames(target, context), dn)})   # "inv_depth" (+ coarser scales)
        depth_all = 1.0 / inv_scales["inv_depth"]
        def part(x, i):
            return x[i * B:(i + 1) * B]
        kp_t = {k: part(v, 0) for k, v in kp_all.items()}
        poses, ctxs, logs = [], [], {}
        kpn_terms = {"geom": 0.0, "desc": 0.0, "score": 0.0, "const": 0.0}
        for c in range(n_ctx):
            kp_c = {k: part(v, c + 1) for k, v in kp_all.items()}
            gt = batch["T_c_t_gt"][:, c] if cfg.pose_source == "gt" else None
            T_c_t, terms = keypoint_pair_losses(kp_t, kp_c, part(depth_all, 0), part(depth_all, c + 1), K, cfg.keypoints,
                                                warp_pose=gt)
            for k in kpn_terms:
                kpn_terms[k] = kpn_terms[k] + terms[k] / n_ctx
            logs["pnp_inliers"] = logs.get("pnp_inliers", 0.0) + float(terms["inliers"]) / n_ctx
            logs["pnp_failed"] = logs.get("pnp_failed", 0.0) + float(terms["pnp_failed"]) / n_ctx
            poses.append(T_c_t if gt is None else gt)
            ctxs.append(context[:, c])
            if "T_c_t_gt" in batch:        # scale-free pose errors of the keypoint pose (monocular: no scale)
                r_err, t_err = scale_free_pose_errors(T_c_t, batch["T_c_t_gt"][:, c])
                logs["rot_err_deg"] = logs.get("rot_err_deg", 0.0) + r_err / n_ctx
                logs["trans_dir_err_deg"] = logs.get("trans_dir_err_deg", 0.0) + t_err / n_ctx
        # Multi-scale depth loss: every DepthNet scale is upsampled to the input size for the photometric
        # term (all scales get a training signal); smoothness at each scale's own size, weighted 1 / 2^s.
        scales = ["inv_depth"] + sorted(k for k in inv_scales if k != "inv_depth")
        photo, smooth, mask = multiscale_photometric_loss(target, ctxs, poses, K,
                                                          [part(inv_scales[k], 0) for k in scales],
                                                          gamma=cfg.gamma, automask=cfg.automask)
        l_depth = photo + cfg.beta3 * smooth + cfg.beta4 * kpn_terms["const"]
        l_kpn = kpn_terms["geom"] + cfg.beta1 * kpn_terms["desc"] + cfg.beta2 * kpn_terms["score"]
        if homography:    # KP3D §4.1: homography adaptation from the target frame
            kp_h = {k: part(v, n_ctx + 1).float() for k, v in kp_all.items()}
            l_hom, hom_logs = kp2d_loss({k: v.float() for k, v in kp_t.items()}, kp_h, batch["H_tgt_src"].float(),
                                        self.config.augment.kp2d)
            l_kpn = l_kpn + self.config.augment.homography_weight * l_hom
            logs.update({"homography": float(l_hom.detach()), **{f"homography_{k}": v for k, v in hom_logs.items()}})
        if "photo_source" in batch:   # a homography pair from the photos (keeps the photo-trained behaviour)
            kp_p = kpn({"image": normalise_input(torch.cat([batch["photo_source"], batch["photo_target"]], 0), kpn)})
            l_ph, ph_logs = kp2d_loss({k: part(v, 0).float() for k, v in kp_p.items()},
                                      {k: part(v, 1).float() for k, v in kp_p.items()}, batch["photo_H"].float(),
                                      self.config.augment.kp2d)
            l_kpn = l_kpn + self.config.augment.photos_weight * l_ph
            logs.update({"photos": float(l_ph.detach()), **{f"photos_{k}": v for k, v in ph_logs.items()}})
        loss = l_depth + cfg.alpha * l_kpn
        logs.update({"loss": float(loss.detach()), "depth": float(l_depth.detach()), "kpn": float(l_kpn.detach()),
                     "photo": float(photo.detach()),
                     "smooth": float(smooth.detach()), "automask_kept": float(mask.mean()),
                     **{k: float(torch.as_tensor(v).detach()) for k, v in kpn_terms.items()}})
        return loss, logs

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        output_dir = Path(output_dir)
        h = config_hash(self.config)
        d = self.config.data
        return [export_module(models["keypointnet"], output_dir / "keypointnet_kp3d.onnx", trained=True,
                              config_hash=h, sample_hw=(d.height, d.width)),
                export_module(models["depthnet"], output_dir / "depthnet_kp3d.onnx", trained=True,
                              config_hash=h, sample_hw=(d.height, d.width), trained_input_hw=(d.height, d.width))]


RECIPE = Kp3dRecipe
