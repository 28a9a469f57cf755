"""Self-supervised DepthNet pretraining (KP3D §4 "Pretrained baseline"): DepthNet + PoseNet trained on
monocular snippets (I_{t-dt}, I_t, I_{t+dt}) by view synthesis, the method of Godard et al. [40] as the
paper describes it. Written here from that description (no code of the original is used).

Per snippet: DepthNet predicts the target's inverse depth at 4 scales; PoseNet predicts T_c_t for each
(target, context) pair, the pair fed earlier frame first (``model.posenet_temporal_order``: the earlier
context's (context, target) pose is inverted, so PoseNet always estimates forward-in-time motion; fed
target first, a 300-step synthetic run collapsed to one input-independent sideways pose for both
contexts, while temporal order at least gave the forward component the right sign per context); each
scale is upsampled to the input size and every context is inverse-warped
into the target; per pixel the photometric error gamma (1 - SSIM) / 2 + (1 - gamma) |I_t - I_hat| is
minimised over the contexts (occlusions), and pixels whose best *unwarped* error is already lower are
auto-masked (static scenes, objects moving with the camera); edge-aware smoothness of the mean-normalised
inverse depth, weight ``loss.smoothness`` / 2^scale; everything averaged over the scales
(``kp_vo.training.photometric.multiscale_photometric_loss``).
L = L_photo + loss.smoothness * L_smooth. Ground-truth poses, where the data has them, are only logged
(scale-free rotation / translation-direction errors of PoseNet).

Paper schedule: 200 epochs over the KITTI training sequences, Adam, lr 1e-4 halved every 40 epochs:
``train.lr_milestones`` at every 40 epochs' steps with ``train.lr_gamma: 0.5``. A later stage can also
start as a fresh run from the previous one's ``weights/{depthnet,posenet}.safetensors`` through
``model.depthnet_weights`` / ``model.posenet_weights`` (Adam's moment estimates restart then).

Data: exactly kp3d's (``Kp3dDataConfig``, ``snippet_dataset``): a KITTI odometry root + sequence, the
synthetic street sequence, or many synthetic streets (``synthetic_streets``); height / width multiples of 32.
Augmentation of the training snippets (``augment``, off by default; for small real sets): a left-right
mirror of the whole snippet (frames, intrinsics, ground-truth poses) and one brightness / contrast / gamma
change shared by its frames (shared, so the photometric loss still compares like with like).
Outputs: ``<output_dir>/weights/depthnet.safetensors`` (written by the trainer; loads as kp3d's
``model.depthnet_weights``) and ``<output_dir>/export/depthnet_selfsup.onnx``. The chain is

    kp-vo train depthnet_selfsup --config config/train_depthnet_selfsup.yaml
    kp-vo train kp3d --set model.depthnet_weights=runs/depthnet_selfsup/weights/depthnet.safetensors
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kp_vo.errors import InvalidInputError
from kp_vo.export.onnx_export import export_module
from kp_vo.models import build_model
from kp_vo.models.checkpoints import load_initial_weights
from kp_vo.models.posenet import invert_transform
from kp_vo.training.photometric import multiscale_photometric_loss
from kp_vo.training.augment import item_rng
from kp_vo.training.recipe import OMIT_DEFAULT_FROM_HASH, TrainConfig, config_hash
from kp_vo.training.recipes.kp3d import (
    Kp3dDataConfig,
    mirror_snippet,
    normalise_input,
    scale_free_pose_errors,
    snippet_dataset,
)


@dataclass(frozen=True)
class DepthSelfSupLossConfig:
    gamma: float = 0.85                # SSIM share of the photometric error (eq. 10)
    smoothness: float = 1e-3           # weight of the edge-aware smoothness (divided by 2^scale per scale)
    automask: bool = True              # drop pixels whose unwarped error beats the warped one


@dataclass(frozen=True)
class DepthSelfSupModelConfig:
    min_depth: float = 0.1             # DepthNet output range (m, up to scale): same options as kp3d's DepthNet
    max_depth: float = 100.0
    width: int = 64                    # DepthNet encoder width: 64 = ResNet-18 (the paper), smaller = reduced
    posenet_width: int = 256           # PoseNet decoder channels
    posenet_encoder_width: int = 64    # PoseNet's ResNet-18 trunk width
    posenet_temporal_order: bool = True  # feed each pair earlier frame first (the pose of an earlier context is
                                         # inverted): PoseNet then always estimates forward-in-time motion; False
                                         # feeds target first (it must tell past from future by appearance)
    depthnet_weights: str = ""         # .safetensors to start from (e.g. the previous schedule stage); "" = random
    posenet_weights: str = ""          # likewise for PoseNet


@dataclass(frozen=True)
class DepthSelfSupAugmentConfig:
    """Training-snippet augmentation (validation snippets are never augmented). Every frame of a snippet
    gets the same change, so the view-synthesis loss stays consistent."""

    flip_p: float = 0.0                # probability of mirroring the snippet left-right (cx -> W - 1 - cx,
                                       # ground-truth poses mirrored alike)
    brightness: float = 0.0            # additive, uniform in +- this
    contrast: float = 0.0              # multiplicative about the target's mean, uniform in 1 +- this
    gamma: float = 0.0                 # exponent, uniform in 1 +- this


@dataclass(frozen=True)
class DepthSelfSupConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/depthnet_selfsup", lr=1e-4))
    data: Kp3dDataConfig = field(default_factory=Kp3dDataConfig)
    loss: DepthSelfSupLossConfig = field(default_factory=DepthSelfSupLossConfig)
    model: DepthSelfSupModelConfig = field(default_factory=DepthSelfSupModelConfig)
    augment: DepthSelfSupAugmentConfig = field(default_factory=DepthSelfSupAugmentConfig,
                                               metadata=OMIT_DEFAULT_FROM_HASH)


class AugmentedSnippets(torch.utils.data.Dataset):
    """``SnippetDataset`` items with ``DepthSelfSupAugmentConfig``'s changes, drawn afresh per call."""

    def __init__(self, snippets: torch.utils.data.Dataset, cfg: DepthSelfSupAugmentConfig):
        self.snippets, self.cfg = snippets, cfg

    def __len__(self) -> int:
        return len(self.snippets)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        item = dict(self.snippets[k])
        cfg, rng = self.cfg, item_rng(None, k)
        if rng.random() < cfg.flip_p:
            item = mirror_snippet(item)
        frames = torch.cat([item["target"][None], item["context"]])           # (1 + n, 3, H, W)
        if cfg.brightness or cfg.contrast or cfg.gamma:
            mean = float(frames[0].mean())
            c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
            b = rng.uniform(-cfg.brightness, cfg.brightness)
            g = rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
            frames = (((frames - mean) * c + mean + b).clamp(0.0, 1.0) ** g).clamp(0.0, 1.0)
        item["target"], item["context"] = frames[0].contiguous(), frames[1:].contiguous()
        return item


class DepthSelfSupRecipe:
    name = "depthnet_selfsup"
    config_type = DepthSelfSupConfig

    def __init__(self, config: DepthSelfSupConfig):
        self.config = config

    def build_models(self) -> dict[str, nn.Module]:
        loss = self.config.loss
        if not 0.0 <= loss.gamma <= 1.0:
            raise InvalidInputError(f"loss.gamma must be in [0, 1], got {loss.gamma}")
        if loss.smoothness < 0:
            raise InvalidInputError(f"loss.smoothness must be >= 0, got {loss.smoothness}")
        m = self.config.model
        models = {"depthnet": build_model("depthnet", min_depth=m.min_depth, max_depth=m.max_depth, width=m.width),
                  "posenet": build_model("posenet", width=m.posenet_width, encoder_width=m.posenet_encoder_width)}
        load_initial_weights(models, {"depthnet": m.depthnet_weights, "posenet": m.posenet_weights}, self.name)
        return models

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        snippets = snippet_dataset(self.config.data, split)
        aug = self.config.augment
        if split == "train" and (aug.flip_p > 0 or aug.brightness or aug.contrast or aug.gamma):
            return AugmentedSnippets(snippets, aug)
        return snippets

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config.loss
        dn, pn = models["depthnet"], models["posenet"]
        target, context, K = batch["target"], batch["context"], batch["K"]   # (B,3,H,W), (B,n,3,H,W), (B,3,3)
        B, n_ctx = target.shape[0], context.shape[1]
        inv = dn({"image": normalise_input(target, dn)})                     # "inv_depth" (+ coarser when training)
        inv_depths = [inv[k] for k in ["inv_depth"] + sorted(k for k in inv if k != "inv_depth")]
        ctxs = [context[:, c] for c in range(n_ctx)]
        # context 0 precedes the target, the others follow it (SnippetDataset order)
        flip = [self.config.model.posenet_temporal_order and c == 0 for c in range(n_ctx)]
        pairs = torch.cat([torch.cat([ctx, target] if f else [target, ctx], 1) for ctx, f in zip(ctxs, flip)], 0)
        T_all = pn({"image": normalise_input(pairs, pn)})["T_c_t"]           # (n B, 4, 4): second <- first
        poses = [invert_transform(T_all[c * B:(c + 1) * B]) if flip[c] else T_all[c * B:(c + 1) * B]
                 for c in range(n_ctx)]
        photo, smooth, mask = multiscale_photometric_loss(target, ctxs, poses, K, inv_depths,
                                                          gamma=cfg.gamma, automask=cfg.automask)
        loss = photo + cfg.smoothness * smooth
        logs = {"photo": float(photo.detach()), "smooth": float(smooth.detach()), "automask_kept": float(mask.mean())}
        has_gt = batch["has_gt"].all() if "has_gt" in batch else "T_c_t_gt" in batch
        if has_gt:                          # scale-free PoseNet errors (monocular: the scale is unknown)
            r_errs, t_errs = zip(*(scale_free_pose_errors(poses[c], batch["T_c_t_gt"][:, c]) for c in range(n_ctx)))
            logs["rot_err_deg"] = sum(r_errs) / n_ctx
            logs["trans_dir_err_deg"] = sum(t_errs) / n_ctx
        return loss, logs

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        """The DepthNet only (PoseNet is training-only); its weights are the trainer's
        ``weights/depthnet.safetensors``."""
        d = self.config.data
        return [export_module(models["depthnet"], Path(output_dir) / "depthnet_selfsup.onnx", trained=True,
                              config_hash=config_hash(self.config), sample_hw=(d.height, d.width),
                              trained_input_hw=(d.height, d.width))]


RECIPE = DepthSelfSupRecipe
