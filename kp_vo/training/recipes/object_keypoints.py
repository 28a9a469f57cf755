"""3D-object KeypointNet recipe (Suwajanakorn et al.): pairs of rendered views of synthetic chairs
(``kp_vo.datasets.objects``) with known relative transforms and masks.

L = a_con L_con + a_pose L_pose + a_sep L_sep + a_obj L_obj + a_var L_var + a_orient L_orient,
with the paper's (a_con, a_pose, a_sep, a_obj) = (1, 0.2, 1, 1). The orientation net is trained alongside with its own
L2 loss on the projected +x / -x ends and provides the flag at test time (and in the export).
The keypoint net is conditioned on the flag the orientation net predicts in the same forward pass
(the paper's jointly trained variant), so one forward through a DDP-wrapped model does everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kp_vo.datasets.objects import (
    make_chair,
    object_camera,
    project_object_points,
    random_view,
    render_object,
)
from kp_vo.errors import InvalidInputError
from kp_vo.export.onnx_export import export_module
from kp_vo.models import build_model
from kp_vo.models.object_keypointnet import spatial_expectation
from kp_vo.training.losses_object import (
    consistency_loss,
    orientation_loss,
    pose_loss,
    separation_loss,
    silhouette_loss,
    unproject,
    variance_loss,
)
from kp_vo.training.procrustes_torch import (
    rotation_angular_distance,
    weighted_procrustes,
)
from kp_vo.training.recipe import TrainConfig, config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectDataConfig:
    size: int = 64                     # rendered image size (square; paper: 128)
    num_objects: int = 20              # distinct random chairs in the training split
    pairs_per_object: int = 20         # view pairs per chair
    distance: float = 4.0              # camera distance to the object centre (object spans [-1, 1])
    seed: int = 0


@dataclass(frozen=True)
class ObjectLossConfig:
    consistency: float = 1.0           # a_con
    pose: float = 0.2                  # a_pose
    separation: float = 1.0            # a_sep
    silhouette: float = 1.0            # a_obj
    variance: float = 0.1              # a_var (not given in the paper)
    orientation: float = 1.0           # orientation-net L2 loss
    delta: float = 0.05                # separation distance (object units)
    noise_std: float = 0.1             # Gaussian noise on the keypoints in the pose loss (paper: 0.1)


@dataclass(frozen=True)
class ObjectKeypointsConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/object_keypoints", lr=1e-3))
    data: ObjectDataConfig = field(default_factory=ObjectDataConfig)
    loss: ObjectLossConfig = field(default_factory=ObjectLossConfig)
    num_keypoints: int = 10
    width: int = 64                    # channels of the keypoint net


class ObjectPairDataset(torch.utils.data.Dataset):
    """Rendered view pairs. Item: "image1", "image2" (3, S, S) float32 in [0, 1]; "mask1", "mask2"
    (1, S, S) float32 0/1; "K" (3, 3); "T_2_1" (4, 4) view-1 camera -> view-2 camera; "ends1", "ends2"
    (2, 2) pixels of the object's +x and -x ends; "flag1", "flag2" () float 0/1 orientation flags."""

    def __init__(self, cfg: ObjectDataConfig, split: str):
        self.cfg, self.split = cfg, split
        offset = 0 if split == "train" else 100_000            # val uses unseen chairs
        n_obj = cfg.num_objects if split == "train" else max(2, cfg.num_objects // 5)
        self.objects = [make_chair(cfg.seed * 1_000_003 + offset + i) for i in range(n_obj)]
        self.K = object_camera(cfg.size, cfg.size, cfg.distance)

    def __len__(self) -> int:
        return len(self.objects) * self.cfg.pairs_per_object

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        obj = self.objects[k // self.cfg.pairs_per_object]
        rng = np.random.default_rng([self.cfg.seed, 0 if self.split == "train" else 1, k])
        item: dict[str, torch.Tensor] = {"K": torch.from_numpy(self.K.astype(np.float32))}
        poses = []
        for v in (1, 2):
            T_obj_cam = random_view(rng, self.cfg.distance)
            image, mask, _ = render_object(obj, T_obj_cam, self.K, self.cfg.size, self.cfg.size)
            ends = project_object_points(np.array([[1.0, 0, 0], [-1.0, 0, 0]]), T_obj_cam, self.K)
            item[f"image{v}"] = torch.from_numpy(image).permute(2, 0, 1).contiguous()
            item[f"mask{v}"] = torch.from_numpy(mask.astype(np.float32))[None]
            item[f"ends{v}"] = torch.from_numpy(ends.astype(np.float32))
            item[f"flag{v}"] = torch.tensor(float(ends[0, 0] > ends[1, 0]))
            poses.append(T_obj_cam)
        item["T_2_1"] = torch.from_numpy((np.linalg.inv(poses[1]) @ poses[0]).astype(np.float32))
        return item


class ObjectKeypointsRecipe:
    name = "object_keypoints"
    config_type = ObjectKeypointsConfig

    def __init__(self, config: ObjectKeypointsConfig):
        self.config = config

    def build_models(self) -> dict[str, nn.Module]:
        return {"object_keypointnet": build_model("object_keypointnet", num_keypoints=self.config.num_keypoints,
                                                  width=self.config.width)}

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        if split not in ("train", "val"):
            raise InvalidInputError(f"split must be 'train' or 'val', got {split!r}")
        return ObjectPairDataset(self.config.data, split)

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, z0 = self.config.loss, self.config.data.distance
        net = models["object_keypointnet"]
        B = batch["image1"].shape[0]
        images = torch.cat([batch["image1"], batch["image2"]], 0)
        x = (images - 0.5) / 0.5                                           # spec: mean 0.5, std 0.5
        flags = torch.cat([batch["flag1"], batch["flag2"]], 0)
        # One forward through the (possibly DDP-wrapped) model; a hook keeps the orientation net's
        # logits so its +x / -x end predictions can be trained. The keypoint net is conditioned on the
        # predicted flag (the paper's jointly trained variant).
        captured: list[torch.Tensor] = []
        hook = getattr(net, "module", net).orientation_net.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            out = net({"image": x})
        finally:
            hook.remove()
        _, ends = spatial_expectation(captured[0])                          # (2B, 2, 2) pixels
        uvz, prob = out["uvz"], out["prob"]
        K2 = torch.cat([batch["K"], batch["K"]], 0)
        masks = torch.cat([batch["mask1"], batch["mask2"]], 0)
        width = images.shape[-1]
        X = unproject(uvz, K2, z0)
        T_2_1 = batch["T_2_1"]
        l_con = consistency_loss(uvz[:B], uvz[B:], batch["K"], T_2_1, z0, width)
        gen = torch.Generator().manual_seed(int(self.config.train.seed) * 100_003 + int(step))
        l_pose = pose_loss(X[:B], X[B:], T_2_1[:, :3, :3], cfg.noise_std, gen)
        l_sep = separation_loss(X, cfg.delta)
        l_obj = silhouette_loss(prob, masks)
        l_var = variance_loss(prob, uvz[..., :2])
        l_or = orientation_loss(ends, torch.cat([batch["ends1"], batch["ends2"]], 0), width)
        loss = (cfg.consistency * l_con + cfg.pose * l_pose + cfg.separation * l_sep + cfg.silhouette * l_obj
                + cfg.variance * l_var + cfg.orientation * l_or)
        with torch.no_grad():
            R_hat, _ = weighted_procrustes(X[:B], X[B:])
            ang = torch.rad2deg(rotation_angular_distance(R_hat, T_2_1[:, :3, :3])).mean()
            pred_flag = (ends[:, 0, 0] > ends[:, 1, 0]).to(flags.dtype)
        return loss, {"loss": float(loss.detach()), "consistency": float(l_con.detach()),
                      "pose": float(l_pose.detach()), "separation": float(l_sep.detach()),
                      "silhouette": float(l_obj.detach()), "variance": float(l_var.detach()),
                      "orientation": float(l_or.detach()), "angular_error_deg": float(ang),
                      "flag_accuracy": float((pred_flag == flags).float().mean())}

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        s = self.config.data.size
        return [export_module(models["object_keypointnet"], Path(output_dir) / "object_keypointnet.onnx",
                              trained=True, config_hash=config_hash(self.config), sample_hw=(s, s))]


RECIPE = ObjectKeypointsRecipe
