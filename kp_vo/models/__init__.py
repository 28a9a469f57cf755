"""Torch models (written in the project, no torchvision) and a registry by kind name.

Every model: ``forward({"image": (B, C, H, W)}) -> dict`` of documented tensors, and
``spec() -> ModelSpec`` (normalization, size multiple, outputs) used by export and runtime.
"""

from __future__ import annotations

from typing import Callable

from kp_vo.errors import InvalidInputError


def _keypointnet(**opts):
    from kp_vo.models.keypointnet import KeypointNet
    return KeypointNet(**opts)


def _keypointnet_vgg(**opts):
    from kp_vo.models.keypointnet_vgg import KeypointNetVGG
    return KeypointNetVGG(**opts)


def _keypointnet_lite(**opts):
    from kp_vo.models.keypointnet_lite import KeypointNetLite
    return KeypointNetLite(**opts)


def _depthnet(**opts):
    from kp_vo.models.depthnet import DepthNet
    return DepthNet(**opts)


def _posenet(**opts):
    from kp_vo.models.posenet import PoseNet
    return PoseNet(**opts)


def _viewsynth(**opts):
    from kp_vo.models.viewsynth import ViewSynthFeatures
    return ViewSynthFeatures(**opts)


def _object_keypointnet(**opts):
    from kp_vo.models.object_keypointnet import ObjectKeypointNet
    return ObjectKeypointNet(**opts)


MODEL_BUILDERS: dict[str, Callable] = {
    "keypointnet": _keypointnet,             # KP3D: ResNet-18 U-Net KeypointNet
    "keypointnet_vgg": _keypointnet_vgg,     # KP2D baseline VGG-style KeypointNet
    "keypointnet_lite": _keypointnet_lite,   # narrow grey KeypointNet distilled from keypointnet_vgg (CPU)
    "depthnet": _depthnet,                   # KP3D / Monodepth-style DepthNet
    "posenet": _posenet,                     # ego-motion net for self-supervised DepthNet pretraining (training only)
    "viewsynth": _viewsynth,                 # ViewSynth depth-image features (VGG-16 conv4_3, D2-Net)
    "object_keypointnet": _object_keypointnet,  # 3D-object KeypointNet + orientation net
}


def build_model(kind: str, **options):
    """A freshly initialised (untrained) model of ``kind``, in eval mode."""
    if kind not in MODEL_BUILDERS:
        raise InvalidInputError(f"unknown model {kind!r}; available: {', '.join(sorted(MODEL_BUILDERS))}")
    try:
        model = MODEL_BUILDERS[kind](**options)
    except TypeError as exc:
        raise InvalidInputError(f"bad options for model {kind!r}: {exc}") from None
    except ValueError as exc:
        raise InvalidInputError(f"bad options for model {kind!r}: {exc}") from None
    return model.eval()
