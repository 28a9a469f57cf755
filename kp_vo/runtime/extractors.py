"""Extractors and the depth estimator served by an exported model (ONNX Runtime) or torch.

KeypointNetExtractor.extract(image (H,W)|(H,W,3) uint8) -> Features, metric "l2", keypoints in
input pixels. ViewSynthExtractor.extract(depth (H,W) float32 m | uint16 mm) -> Features.
DepthNetEstimator.estimate(image) -> (H, W) float32 depth = scale / inverse depth (0 = invalid).

With the torch backend on CUDA the extractors select keypoints on the GPU (``kp_vo.runtime.torch_select``)
and copy back only the chosen keypoints, scores and descriptors; with ONNX Runtime, or torch on the CPU,
the numpy selection here runs on the dense outputs in host memory.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.ndimage import maximum_filter
from scipy.spatial import cKDTree

from kp_vo.errors import InvalidInputError
from kp_vo.features.base import Features, check_image
from kp_vo.runtime.preprocess import (
    depth_to_input,
    fit_size,
    image_to_input,
    to_input_pixels,
)

log = logging.getLogger(__name__)


def open_model(kind: str | tuple[str, ...], model_path, backend: str, device: str, threads, model_options: dict,
               shipped: str | None = None):
    """OnnxModel (backend "onnx", model_path a .onnx of ``kind``, or of one of several kinds; None = the
    model shipped for ``shipped``, see ``kp_vo.runtime.shipped``) or TorchModel (backend "torch", one
    ``kind``, model_path a .safetensors or None for random weights)."""
    if backend == "onnx":
        if model_options:
            raise InvalidInputError(f"unknown options {sorted(model_options)}: not extractor options, and model "
                                    "options (descriptor_dim, ...) are fixed in an .onnx file at export")
        if model_path is None and shipped is not None:
            from kp_vo.runtime.shipped import shipped_model
            model_path = shipped_model(shipped)
            log.info("%s: no model_path given, using the shipped %s", shipped, model_path)
        if model_path is None:
            what = kind if isinstance(kind, str) else "/".join(kind)
            raise InvalidInputError(f"{what}: model_path (an exported .onnx) is required for the onnx backend")
        from kp_vo.runtime.session import OnnxModel
        return OnnxModel(model_path, expected_kind=kind, device=device, threads=threads)
    if backend == "torch":
        from kp_vo.runtime.torch_backend import TorchModel
        return TorchModel(kind, weights=model_path, device=device, threads=threads, **model_options)
    raise InvalidInputError(f"unknown backend {backend!r}; use 'onnx' or 'torch'")


def select_cells(score: np.ndarray, max_keypoints: int, threshold: float, cell_nms: bool,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the chosen cells, best first. score: (Hc, Wc). cell_nms keeps a cell only if
    it is the maximum of its 3x3 cell neighbourhood; ``valid`` optionally masks cells."""
    keep = score > threshold
    if cell_nms:
        keep &= score >= maximum_filter(score, size=3, mode="constant", cval=-np.inf)
    if valid is not None:
        keep &= valid
    idx = np.flatnonzero(keep)
    order = np.argsort(-score.ravel()[idx], kind="stable")
    return idx[order[:max_keypoints]] if max_keypoints > 0 else idx[order]


def suppress_close(uv: np.ndarray, radius_px: float) -> np.ndarray:
    """Greedy non-maximum suppression of keypoints ``uv`` (N, 2), ordered best first: indices (ascending)
    of those with no better kept keypoint within ``radius_px``. Neighbouring cells of a KeypointNet
    may move their keypoints onto the same corner (offsets can cross cells); such duplicates carry
    near-identical descriptors and fail every ratio test. radius_px <= 0 keeps all."""
    n = len(uv)
    if radius_px <= 0 or n < 2:
        return np.arange(n)
    pairs = cKDTree(uv).query_pairs(radius_px, output_type="ndarray")     # (M, 2) with i < j
    suppressed = np.zeros(n, bool)
    if len(pairs):
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        firsts, starts = np.unique(pairs[:, 0], return_index=True)
        ends = np.append(starts[1:], len(pairs))
        for i, a, b in zip(firsts, starts, ends):
            if not suppressed[i]:                   # a kept keypoint suppresses its worse neighbours
                suppressed[pairs[a:b, 1]] = True
    return np.flatnonzero(~suppressed)


class _NetworkExtractor:
    """Shared set-up of the network extractors; subclasses set ``name``. Without ``model_path`` the onnx
    backend serves the model shipped for ``name`` (``kp_vo.runtime.shipped``)."""

    name: str

    def __init__(self, kind, model_path, backend, device, threads, input_height, input_width, scale,
                 max_keypoints, score_threshold, cell_nms, model_options):
        if max_keypoints < 0:
            raise InvalidInputError(f"max_keypoints must be >= 0 (0 = all), got {max_keypoints}")
        self.net = open_model(kind, model_path, backend, device, threads, model_options, shipped=self.name)
        # Select keypoints where a torch network ran on an accelerator. On a CPU its outputs are host memory
        # already and the numpy selection beats many small torch ops (a KITTI frame on a busy 2-core machine:
        # 12 ms numpy, 330 ms torch with 2 threads, 7 ms with 1).
        self.on_device = backend == "torch" and self.net.device.type != "cpu"
        self.target = (input_height, input_width)
        self.scale, self.max_keypoints = scale, int(max_keypoints)
        self.score_threshold, self.cell_nms = float(score_threshold), bool(cell_nms)
        self.provider = self.net.provider

    def net_size(self, h: int, w: int) -> tuple[int, int]:
        return fit_size(h, w, self.net.meta.size_multiple, scale=self.scale, target=self.target)


KEYPOINTNET_KINDS = ("keypointnet", "keypointnet_vgg", "keypointnet_lite")


class KeypointNetExtractor(_NetworkExtractor):
    """KP3D / KP2D KeypointNet: per-cell score, sub-pixel location and L2-normalised descriptor."""

    name = "keypointnet"
    metric = "l2"
    input_kind = "image"

    def __init__(self, model_path=None, backend: str = "onnx", max_keypoints: int = 1000,
                 score_threshold: float = 0.0, cell_nms: bool = False, nms_radius_px: float = 4.0,
                 input_height: int | None = None, input_width: int | None = None, scale: float | None = None,
                 device: str = "auto", threads: int | None = None, kind: str | None = None, **model_options):
        """model_path: .onnx (backend "onnx"; None = the shipped models/keypointnet_kp2d.onnx) or
        .safetensors/None (backend "torch", None = random weights).
        max_keypoints: keep the best N cells (0 = all). score_threshold: drop cells scoring <= this.
        cell_nms: keep only cells that beat their 8 neighbour cells. nms_radius_px: drop a keypoint within
        this distance (input pixels) of a better one (0 = keep duplicates). input_height/width or scale: the
        network input size (rounded to the model's multiple); default the image size rounded.
        kind: "keypointnet" (KP3D ResNet) or "keypointnet_vgg" (KP2D); default: the kind an .onnx file
        declares, "keypointnet" for torch."""
        if not nms_radius_px >= 0:
            raise InvalidInputError(f"nms_radius_px must be >= 0 (0 = keep duplicates), got {nms_radius_px}")
        if kind is None:
            kind = KEYPOINTNET_KINDS if backend == "onnx" else "keypointnet"
        super().__init__(kind, model_path, backend, device, threads, input_height, input_width, scale,
                         max_keypoints, score_threshold, cell_nms, model_options)
        self.nms_radius_px = float(nms_radius_px)

    def extract(self, image: np.ndarray) -> Features:
        check_image(image)
        h, w = image.shape[:2]
        size = self.net_size(h, w)
        x = image_to_input(image, self.net.meta, size)
        if self.on_device:
            return self._select_on_device(self.net.run_on_device(x), size, (h, w))
        return keypointnet_features(self.net.run(x), size, (h, w), threshold=self.score_threshold,
                                    cell_nms=self.cell_nms, radius_px=self.nms_radius_px,
                                    max_keypoints=self.max_keypoints)

    def _select_on_device(self, out: dict, size: tuple[int, int], image_hw: tuple[int, int]) -> Features:
        """The torch backend's selection where the network ran; only the N chosen rows reach the host."""
        from kp_vo.runtime.torch_select import gather_features, keypointnet_select

        index, kp = keypointnet_select(out["score"][0, 0], out["coord"][0], size, image_hw,
                                       threshold=self.score_threshold, cell_nms=self.cell_nms,
                                       radius_px=self.nms_radius_px, max_keypoints=self.max_keypoints)
        return gather_features(index, kp, out["score"][0, 0], out["descriptor"][0])


def keypointnet_features(out: dict[str, np.ndarray], net_hw: tuple[int, int], image_hw: tuple[int, int], *,
                         threshold: float, cell_nms: bool, radius_px: float, max_keypoints: int) -> Features:
    """KeypointNet outputs on the host -> Features: candidate cells best first, keypoints mapped to the
    (H, W) input image and clipped to it, greedy suppression within ``radius_px`` (input pixels), then the
    best ``max_keypoints`` survivors (0 = all). out: "score" (1,1,Hc,Wc), "coord" (1,2,Hc,Wc) network
    pixels, "descriptor" (1,D,Hc,Wc) unit L2; net_hw: the network input (h, w)."""
    h, w = image_hw
    score = out["score"][0, 0]
    coord = out["coord"][0].reshape(2, -1).T
    desc = out["descriptor"][0].reshape(out["descriptor"].shape[1], -1).T
    idx = select_cells(score, 0, threshold, cell_nms)
    kp = to_input_pixels(coord[idx], net_hw, image_hw)
    kp[:, 0] = np.clip(kp[:, 0], 0, w - 1)
    kp[:, 1] = np.clip(kp[:, 1], 0, h - 1)
    keep = suppress_close(kp, radius_px)
    if max_keypoints > 0:
        keep = keep[:max_keypoints]
    idx, kp = idx[keep], kp[keep]
    return Features(kp, score.ravel()[idx].astype(np.float32), np.ascontiguousarray(desc[idx], np.float32), "l2")


class ViewSynthExtractor(_NetworkExtractor):
    """ViewSynth features on a depth image: hard D2-Net detections ranked by soft score."""

    name = "viewsynth"
    metric = "l2"
    input_kind = "depth"             # kp_vo.features.base.extract_frame feeds it Frame.depth

    def __init__(self, model_path=None, backend: str = "onnx", max_keypoints: int = 1000,
                 score_threshold: float = 0.0, input_height: int | None = None, input_width: int | None = None,
                 scale: float | None = None, device: str = "auto", threads: int | None = None, **model_options):
        """model_path: .onnx (backend "onnx"; None = the shipped models/viewsynth.onnx, trained on 240x320
        depth of a 640x480-type camera: give 640x480 depth with scale=0.5) or .safetensors/None (backend
        "torch", None = random weights). input_height/width or scale: the network input size (rounded to
        a multiple of 8); default the depth image size."""
        super().__init__("viewsynth", model_path, backend, device, threads, input_height, input_width, scale,
                         max_keypoints, score_threshold, False, model_options)

    def extract(self, depth: np.ndarray) -> Features:
        """depth: (H, W) float32 metres or uint16 millimetres, 0/NaN invalid."""
        if not isinstance(depth, np.ndarray) or depth.ndim != 2:
            raise InvalidInputError(f"viewsynth needs an (H, W) depth image, got {getattr(depth, 'shape', depth)}")
        h, w = depth.shape
        size = self.net_size(h, w)
        x = depth_to_input(depth, self.net.meta, size)
        if self.on_device:
            return self._select_on_device(self.net.run_on_device(x), size, (h, w))
        out = self.net.run(x)
        score, mask = out["score"][0, 0], out["keypoint_mask"][0, 0] > 0.5
        desc = out["descriptor"][0].reshape(out["descriptor"].shape[1], -1).T
        idx = select_cells(score, self.max_keypoints, self.score_threshold, False, valid=mask)
        hc, wc = score.shape
        stride = size[0] // hc
        uv = np.stack([(idx % wc) * stride + (stride - 1) / 2.0, (idx // wc) * stride + (stride - 1) / 2.0], 1)
        kp = to_input_pixels(uv.astype(np.float32), size, (h, w))
        return Features(kp, score.ravel()[idx].astype(np.float32), np.ascontiguousarray(desc[idx], np.float32), "l2")

    def _select_on_device(self, out: dict, size: tuple[int, int], image_hw: tuple[int, int]) -> Features:
        """The torch backend's selection where the network ran; only the N chosen rows reach the host."""
        from kp_vo.runtime.torch_select import gather_features, viewsynth_select

        score = out["score"][0, 0]
        index, kp = viewsynth_select(score, out["keypoint_mask"][0, 0] > 0.5, size, image_hw,
                                     threshold=self.score_threshold, max_keypoints=self.max_keypoints)
        return gather_features(index, kp, score, out["descriptor"][0])


class DepthNetEstimator:
    """Monocular DepthNet: depth (m) = scale / inverse depth, resized back to the input size.

    DepthNet is scale-ambiguous: ``scale`` (default 1) converts its units to metres when known
    (e.g. from a camera height or stereo); otherwise the odometry must fix the scale itself.
    Without ``model_path`` the onnx backend serves the shipped DepthNet (``kp_vo.runtime.shipped``).
    Without input_height / input_width / input_scale the network input is the size the model was
    trained at when its file records one (``kp_vo.trained_input_hw``), else the image's own size.
    """

    name = "depthnet"

    def __init__(self, model_path=None, backend: str = "onnx", scale: float = 1.0, input_height: int | None = None,
                 input_width: int | None = None, input_scale: float | None = None, device: str = "auto",
                 threads: int | None = None, **model_options):
        if not scale > 0:
            raise InvalidInputError(f"depth scale must be > 0, got {scale}")
        self.net = open_model("depthnet", model_path, backend, device, threads, model_options, shipped=self.name)
        self.scale, self.target, self.input_scale = float(scale), (input_height, input_width), input_scale
        trained_hw = self.net.meta.trained_input_hw
        if trained_hw is not None and input_height is None and input_width is None and input_scale is None:
            self.target = trained_hw           # a depth network sees the scene at the size it was trained at
            log.info("%s: input %dx%d, the size the model was trained at", self.name, *trained_hw)
        self.provider = self.net.provider

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """image (H, W) or (H, W, 3) uint8 -> (H, W) float32 depth, 0 where the inverse depth is <= 0."""
        check_image(image)
        h, w = image.shape[:2]
        size = fit_size(h, w, self.net.meta.size_multiple, scale=self.input_scale, target=self.target)
        inv = self.net.run(image_to_input(image, self.net.meta, size))["inv_depth"][0, 0]
        inv = cv2.resize(inv, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.where(inv > 0, self.scale / np.maximum(inv, 1e-12), 0.0).astype(np.float32)
