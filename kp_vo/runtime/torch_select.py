"""Keypoint selection on the torch device: the network's dense per-cell outputs stay where the network
ran (GPU or CPU); only the chosen keypoints, scores and descriptors come back to the host, in one copy.

Torch equivalents of the host selection in ``kp_vo.runtime.extractors`` (``select_cells``,
``suppress_close``), giving the same keypoints in the same order:

    keypointnet_select(score (Hc,Wc), coord (2,Hc,Wc) network px, net_hw, image_hw, ...)
        -> index (N,) flat cells best first, keypoints (Hc*Wc, 2) input-image pixels
    viewsynth_select(score (Hc,Wc), valid (Hc,Wc) bool, net_hw, image_hw, ...) -> the same
    gather_features(index, keypoints, score, descriptor (D,Hc,Wc)) -> Features (one device->host copy)

The radius suppression is the host's greedy rule (a keypoint goes when a better *kept* keypoint lies
within the radius) solved in parallel: each keypoint is compared with the keypoints of the cells in a
window around its own cell, the window sized from the largest distance between a keypoint and its cell
centre in this frame, and the decisions propagate from the best keypoints down until none is open.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kp_vo.features.base import Features

CHECK_EVERY = 4  # suppression rounds between two checks (one device sync each) for open keypoints


def candidate_cells(score: torch.Tensor, threshold: float, cell_nms: bool,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """(Hc, Wc) bool: cells scoring above ``threshold``; with ``cell_nms`` only those at least as high as
    their 8 neighbours (outside the grid counts as -inf); ``valid`` (Hc, Wc) bool optionally masks cells."""
    keep = score > threshold
    if cell_nms:
        keep &= score >= F.max_pool2d(score[None, None], 3, stride=1, padding=1)[0, 0]
    if valid is not None:
        keep &= valid
    return keep


def rank_cells(score: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """(Hc*Wc,) flat cell indices: the candidates by decreasing score (ties: lower flat index first, as
    numpy's stable argsort), then the other cells."""
    key = torch.where(candidate, -score, torch.full_like(score, math.inf)).reshape(-1)
    return torch.sort(key, stable=True).indices


def to_input_pixels(uv: torch.Tensor, net_hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """(..., 2) network pixels (u, v) -> input-image pixels, float32 (pixel centres at integers on both
    sides; the same arithmetic as ``kp_vo.runtime.preprocess.to_input_pixels``)."""
    sy, sx = image_hw[0] / net_hw[0], image_hw[1] / net_hw[1]
    uv = uv.float()
    return torch.stack([(uv[..., 0] + 0.5) * sx - 0.5, (uv[..., 1] + 0.5) * sy - 0.5], -1)


def cell_centres(hc: int, wc: int, stride: int, device: torch.device) -> torch.Tensor:
    """(Hc, Wc, 2) float32 network-pixel centres (u, v) of ``stride``-sized cells."""
    v = torch.arange(hc, dtype=torch.float32, device=device) * stride + (stride - 1) / 2.0
    u = torch.arange(wc, dtype=torch.float32, device=device) * stride + (stride - 1) / 2.0
    return torch.stack([u.view(1, wc).expand(hc, wc), v.view(hc, 1).expand(hc, wc)], -1)


def keypoints_in_image(coord: torch.Tensor, net_hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """coord (2, Hc, Wc) network pixels -> (Hc, Wc, 2) float32 input-image pixels clipped to the image."""
    h, w = image_hw
    kp = to_input_pixels(coord.permute(1, 2, 0), net_hw, image_hw)
    return torch.stack([kp[..., 0].clamp(0, w - 1), kp[..., 1].clamp(0, h - 1)], -1)


def search_window(kp: torch.Tensor, candidate: torch.Tensor, radius_px: float, net_hw: tuple[int, int],
                  image_hw: tuple[int, int]) -> tuple[int, int]:
    """Half-sizes (rows, cols) of the cell window that holds every candidate within ``radius_px`` (input
    pixels) of a cell's keypoint. kp: (Hc, Wc, 2) input pixels; candidate: (Hc, Wc) bool.

    Two keypoints within r of each other whose distances to their own cell centres are at most b (per axis)
    have cell centres at most r + 2 b apart, so |cell column difference| <= (r + 2 b_u) / cell width.
    One device sync (the largest distance b of this frame)."""
    hc, wc = candidate.shape
    stride = net_hw[0] // hc
    centres = to_input_pixels(cell_centres(hc, wc, stride, kp.device), net_hw, image_hw)
    spread = torch.where(candidate[..., None], (kp - centres).abs(), torch.zeros_like(kp)).amax((0, 1))
    b_u, b_v = spread.tolist()
    cell_u, cell_v = stride * image_hw[1] / net_hw[1], stride * image_hw[0] / net_hw[0]
    rows = min(hc - 1, int((radius_px + 2 * b_v) / cell_v) + 1)
    cols = min(wc - 1, int((radius_px + 2 * b_u) / cell_u) + 1)
    return rows, cols


def close_pairs(kp: torch.Tensor, rank: torch.Tensor, candidate: torch.Tensor, radius_px: float,
                window: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of candidates at most ``radius_px`` apart, each pair once, as (better (P,), worse (P,)) long
    flat cell indices with ``rank[better] < rank[worse]``.

    kp: (Hc, Wc, 2) input pixels; rank: (M,) position of each flat cell in the best-first order (M = Hc*Wc);
    candidate: (Hc, Wc) bool; window: half-sizes (rows, cols) from ``search_window``. Each cell is compared
    with the K cells of the half window after it in row-major order (distances in float64, as scipy's
    cKDTree on the host); one device sync (the number of pairs)."""
    hc, wc = candidate.shape
    m, device = hc * wc, kp.device
    rows, cols = window
    dv, du = torch.meshgrid(torch.arange(0, rows + 1, device=device),
                            torch.arange(-cols, cols + 1, device=device), indexing="ij")
    after = (dv > 0) | (du > 0)
    dv, du = dv[after].view(-1, 1, 1), du[after].view(-1, 1, 1)                      # (K, 1, 1)
    nv = torch.arange(hc, device=device).view(1, hc, 1) + dv                          # (K, Hc, 1)
    nu = torch.arange(wc, device=device).view(1, 1, wc) + du                          # (K, 1, Wc)
    inside = (nv < hc) & (nu >= 0) & (nu < wc)                                        # (K, Hc, Wc)
    neighbour = torch.where(inside, nv * wc + nu, torch.full_like(inside, m, dtype=torch.long)).view(-1, m)
    cand = F.pad(candidate.reshape(m), (0, 1))                                        # (M+1,), outside: False
    u, v = (F.pad(kp.reshape(m, 2)[:, i].double(), (0, 1)) for i in (0, 1))        # (M+1,), entry M unused
    close = (u[neighbour] - u[:m]).square() + (v[neighbour] - v[:m]).square() <= radius_px * radius_px
    k, cell = torch.nonzero(close & cand[neighbour] & cand[:m], as_tuple=True)       # (P,) each
    other = neighbour[k, cell]
    first = rank[cell] < rank[other]
    return torch.where(first, cell, other), torch.where(first, other, cell)


def greedy_keep(candidate: torch.Tensor, better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """(M,) bool: the candidates the best-first greedy suppression keeps. candidate: (M,) bool;
    better, worse: (P,) pairs within the radius from ``close_pairs``.

    A candidate is decided once all its better close candidates are: it goes if one of them is kept,
    else it stays. Each round decides at least the best open candidate, so the loop ends; it checks for
    open candidates (one device sync) every ``CHECK_EVERY`` rounds."""
    m = candidate.numel()
    kept = torch.zeros_like(candidate)
    open_ = candidate.clone()
    while True:
        for _ in range(CHECK_EVERY):
            has_kept = _any_into(worse, kept[better], m)
            has_open = _any_into(worse, open_[better], m)
            stays = open_ & ~has_kept & ~has_open
            kept |= stays
            open_ &= ~has_kept & ~stays
        if not bool(open_.any()):
            return kept


def _any_into(target: torch.Tensor, flag: torch.Tensor, m: int) -> torch.Tensor:
    """(m,) bool: for each index, whether any ``flag`` (P,) bool is set among the pairs whose ``target``
    (P,) long is that index."""
    count = torch.zeros(m, dtype=torch.int32, device=flag.device)
    return count.index_add_(0, target, flag.to(torch.int32)) > 0


def suppress_close(kp: torch.Tensor, score: torch.Tensor, candidate: torch.Tensor, radius_px: float,
                   net_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy radius suppression of the candidates' keypoints, best first (``radius_px`` <= 0 keeps all).

    kp: (Hc, Wc, 2) input pixels; score, candidate: (Hc, Wc). Returns order (M,) long, the flat cells best
    first (``rank_cells``), and kept (M,) bool per flat cell."""
    order = rank_cells(score, candidate)
    flat = candidate.reshape(-1)
    if radius_px <= 0:
        return order, flat
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    window = search_window(kp, candidate, radius_px, net_hw, image_hw)
    better, worse = close_pairs(kp, rank, candidate, radius_px, window)
    return order, greedy_keep(flat, better, worse)


def keypointnet_select(score: torch.Tensor, coord: torch.Tensor, net_hw: tuple[int, int],
                       image_hw: tuple[int, int], *, threshold: float, cell_nms: bool, radius_px: float,
                       max_keypoints: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The KeypointNet selection of ``KeypointNetExtractor`` on the outputs' device.

    score: (Hc, Wc) per-cell score; coord: (2, Hc, Wc) keypoint (u, v) in network pixels; net_hw: the
    network input (h, w); image_hw: the input image (H, W); radius_px: suppression radius in input pixels;
    max_keypoints: keep the best N survivors (0 = all). Returns index (N,) long flat cells best first and
    keypoints (Hc*Wc, 2) float32 input pixels of every cell (clipped to the image)."""
    candidate = candidate_cells(score, threshold, cell_nms)
    kp = keypoints_in_image(coord, net_hw, image_hw)
    order, kept = suppress_close(kp, score, candidate, radius_px, net_hw, image_hw)
    index = order[kept[order]]
    if max_keypoints > 0:
        index = index[:max_keypoints]
    return index, kp.reshape(-1, 2)


def viewsynth_select(score: torch.Tensor, valid: torch.Tensor, net_hw: tuple[int, int],
                     image_hw: tuple[int, int], *, threshold: float,
                     max_keypoints: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ViewSynth selection of ``ViewSynthExtractor`` on the outputs' device: cells of ``valid`` (Hc, Wc)
    bool scoring above ``threshold``, best ``max_keypoints`` (0 = all). Returns index (N,) long flat cells
    best first and keypoints (Hc*Wc, 2) float32 input pixels of every cell centre."""
    candidate = candidate_cells(score, threshold, False, valid=valid)
    order = rank_cells(score, candidate)
    index = order[candidate.reshape(-1)[order]]
    if max_keypoints > 0:
        index = index[:max_keypoints]
    hc, wc = score.shape
    centres = cell_centres(hc, wc, net_hw[0] // hc, score.device)
    return index, to_input_pixels(centres, net_hw, image_hw).reshape(-1, 2)


def gather_features(index: torch.Tensor, keypoints: torch.Tensor, score: torch.Tensor,
                    descriptor: torch.Tensor) -> Features:
    """Features of the cells ``index`` (N,) best first, copied to the host in one transfer.

    keypoints: (M, 2) input pixels; score: (Hc, Wc); descriptor: (D, Hc, Wc) unit L2 (float16 descriptors
    from half-precision autocast are renormalised in float32)."""
    desc = descriptor.reshape(descriptor.shape[0], -1)[:, index].T.float()
    if descriptor.dtype != torch.float32:
        desc = F.normalize(desc, p=2.0, dim=1, eps=1e-8)
    packed = torch.cat([keypoints[index].float(), score.reshape(-1)[index, None].float(), desc], 1)
    host = packed.cpu().numpy()
    return Features(np.ascontiguousarray(host[:, :2]), np.ascontiguousarray(host[:, 2]),
                    np.ascontiguousarray(host[:, 3:]), "l2")
