"""PoseNet for self-supervised depth pretraining (the ego-motion net of the monocular method KP3D
pretrains its DepthNet with, KP3D §4 "Pretrained baseline"): written here from the method's description.

A ResNet-18 encoder (``kp_vo.models.layers.ResNet18Encoder`` with 6 input channels) sees two frames
of a snippet (the target and one context image) stacked on channels; a small decoder (1x1 squeeze conv, three 3x3 convs, a 1x1
projection to 6 channels, global average) regresses one 6-vector per pair, scaled by 0.01 so that
a fresh network starts near the identity motion.

Input  {"image": (B, 6, H, W) float32}: channels 0-2 the first frame, 3-5 the second, both RGB in
       [0, 1] normalised with ImageNet mean/std; H, W multiples of 32.
Output dict:
    "pose"   (B, 6)     axis-angle rotation (rad, 3) then translation (3, up to the monocular scale)
    "T_c_t"  (B, 4, 4)  the same motion as a transform mapping first-camera coordinates into the second
                        camera (rotation by Rodrigues' formula; differentiable): T_context_target when
                        fed (target, context); ``invert_transform`` gives the other direction
Only used during training (the VO gets its poses from keypoints): it has a spec for normalisation
but is not offered by ``kp-vo export``.
"""

from __future__ import annotations

import torch
from torch import nn

from kp_vo.errors import InvalidInputError
from kp_vo.models.layers import ResNet18Encoder
from kp_vo.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

POSE_SCALE = 0.01       # output scaling: small initial motions keep the first warps sane

_SMALL_ANGLE_SQ = 1e-6  # below this theta^2 the Taylor series of the Rodrigues coefficients is used


def axis_angle_to_rotation(omega: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, differentiable everywhere (including omega = 0).

    omega (..., 3) axis * angle (rad) -> R (..., 3, 3) = I + a [w]_x + b [w]_x^2 with
    a = sin(theta) / theta, b = (1 - cos(theta)) / theta^2, theta = |omega|; near theta = 0 the
    coefficients come from their Taylor series so neither value nor gradient divides by zero.
    """
    if omega.shape[-1] != 3:
        raise InvalidInputError(f"axis-angle vectors must be (..., 3), got {tuple(omega.shape)}")
    theta_sq = (omega * omega).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)       # no sqrt(0) in the graph
    theta = torch.sqrt(safe_sq)
    a = torch.where(small, 1.0 - theta_sq / 6.0 + theta_sq ** 2 / 120.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0 + theta_sq ** 2 / 720.0, (1.0 - torch.cos(theta)) / safe_sq)
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    W = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(W)
    return eye + a[..., None, None] * W + b[..., None, None] * (W @ W)


def pose_vector_to_transform(pose: torch.Tensor) -> torch.Tensor:
    """(B, 6) [axis-angle (3), translation (3)] -> (B, 4, 4) homogeneous transform [R t; 0 1]."""
    if pose.dim() != 2 or pose.shape[1] != 6:
        raise InvalidInputError(f"pose vectors must be (B, 6), got {tuple(pose.shape)}")
    R = axis_angle_to_rotation(pose[:, :3])
    top = torch.cat([R, pose[:, 3:, None]], 2)                                      # (B, 3, 4)
    bottom = torch.zeros_like(top[:, :1])
    bottom[..., 3] = 1.0
    return torch.cat([top, bottom], 1)


def invert_transform(T: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) rigid transforms T_a_b -> T_b_a = [R^T, -R^T t; 0 1] (differentiable)."""
    R_inv = T[:, :3, :3].transpose(1, 2)
    top = torch.cat([R_inv, -(R_inv @ T[:, :3, 3:])], 2)
    return torch.cat([top, T[:, 3:]], 1)


class PoseNet(nn.Module):
    """ResNet-18 pair encoder + pose decoder; see the module docstring for inputs and outputs."""

    def __init__(self, width: int = 256, encoder_width: int = 64):
        """width: channels of the decoder's squeeze / 3x3 convs; encoder_width: the ResNet-18 trunk's first
        channel count (64 = ResNet-18, smaller = a reduced trunk)."""
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.width, self.encoder_width = int(width), int(encoder_width)
        self.encoder = ResNet18Encoder(6, self.encoder_width)
        self.decoder = nn.Sequential(
            nn.Conv2d(self.encoder.channels[-1], width, 1), nn.ReLU(),        # squeeze
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 6, 1))                                          # per-cell 6-vector

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="posenet", input_channels=6, channel_order="RGB", value_range=(0.0, 1.0),
            mean=IMAGENET_MEAN * 2, std=IMAGENET_STD * 2, size_multiple=32,
            outputs={"pose": "(B,6) axis-angle (rad) + translation (up to scale), first -> second frame",
                     "T_c_t": "(B,4,4) first-camera -> second-camera transform"},
            options={"width": self.width, "encoder_width": self.encoder_width})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = inputs["image"]
        if x.dim() != 4 or x.shape[1] != 6:
            raise InvalidInputError(f"PoseNet expects (B, 6, H, W) image pairs, got {tuple(x.shape)}")
        cells = self.decoder(self.encoder(x)[-1])                            # (B, 6, H/32, W/32)
        pose = POSE_SCALE * cells.mean(dim=(2, 3))
        return {"pose": pose, "T_c_t": pose_vector_to_transform(pose)}
