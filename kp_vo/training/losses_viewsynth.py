"""ViewSynth losses: ground-truth correspondences between depth images, the contrastive descriptor
loss with hardest negatives in both directions inside the D2-Net joint detection/description
weighting (L_c, ViewSynth eq. 1), and the View Synthesis Loss (L1 inside view 1's frustum, eq. 2).

Feature maps have stride 8; feature cell (i, j) is centred on image pixel (8 j + 3.5, 8 i + 3.5).
Depth images are (B, 1, H, W) float metres (0 = invalid); K (B, 3, 3); T_2_1 (B, 4, 4) maps view-1
camera coordinates into view 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRIDE = 8


def cell_centres(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(h*w, 2) image-pixel (u, v) centres of the stride-8 cells, row-major."""
    v, u = torch.meshgrid(torch.arange(h, dtype=like.dtype, device=like.device),
                          torch.arange(w, dtype=like.dtype, device=like.device), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], -1) * STRIDE + (STRIDE - 1) / 2.0


def sample_nearest(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel samples of (B, C, H, W) at pixels uv (B, N, 2) -> (B, N, C) (0 outside)."""
    h, w = image.shape[-2:]
    gx = 2.0 * uv[..., 0] / (w - 1) - 1.0
    gy = 2.0 * uv[..., 1] / (h - 1) - 1.0
    out = F.grid_sample(image, torch.stack([gx, gy], -1).unsqueeze(1), mode="nearest", padding_mode="zeros",
                        align_corners=True)
    return out[:, :, 0].transpose(1, 2)


def sample_cells(fmap: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a stride-8 map (B, C, h, w) at image pixels uv (B, N, 2) -> (B, N, C)."""
    h, w = fmap.shape[-2:]
    gx = (uv[..., 0] + 0.5) * (2.0 / (STRIDE * w)) - 1.0
    gy = (uv[..., 1] + 0.5) * (2.0 / (STRIDE * h)) - 1.0
    out = F.grid_sample(fmap, torch.stack([gx, gy], -1).unsqueeze(1), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[:, :, 0].transpose(1, 2)


def map_points(uv: torch.Tensor, depth: torch.Tensor, K_a: torch.Tensor, K_b: torch.Tensor, T_b_a: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels uv (B, N, 2) of view a with depth (B, N) -> (pixels (B, N, 2) in view b, depth (B, N) in view b)."""
    x = (uv[..., 0] - K_a[:, None, 0, 2]) / K_a[:, None, 0, 0] * depth
    y = (uv[..., 1] - K_a[:, None, 1, 2]) / K_a[:, None, 1, 1] * depth
    P = torch.stack([x, y, depth], -1) @ T_b_a[:, :3, :3].transpose(1, 2) + T_b_a[:, None, :3, 3]
    z = P[..., 2]
    zc = z.clamp(min=1e-6)
    u = K_b[:, None, 0, 0] * P[..., 0] / zc + K_b[:, None, 0, 2]
    v = K_b[:, None, 1, 1] * P[..., 1] / zc + K_b[:, None, 1, 2]
    return torch.stack([u, v], -1), z


def cell_correspondences(depth1: torch.Tensor, depth2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor,
                         T_2_1: torch.Tensor, max_rel_depth_error: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth correspondences of every view-1 feature cell.

    Returns (uv2 (B, N, 2) image pixels in view 2 where cell n of view 1 lands, valid (B, N) bool:
    valid view-1 depth, in front of and inside view 2, and visible there: the view-2 depth at uv2
    agrees with the mapped depth within ``max_rel_depth_error`` (occlusion test)), N = h * w cells.
    """
    H, W = depth1.shape[-2:]
    c = cell_centres(H // STRIDE, W // STRIDE, depth1)
    uv1 = c.unsqueeze(0).expand(depth1.shape[0], -1, -1)
    d1 = sample_nearest(depth1, uv1)[..., 0]
    uv2, z2 = map_points(uv1, d1, K1, K2, T_2_1)
    inside = (uv2[..., 0] >= 0) & (uv2[..., 0] <= W - 1) & (uv2[..., 1] >= 0) & (uv2[..., 1] <= H - 1)
    d2 = sample_nearest(depth2, uv2)[..., 0]
    visible = (d2 > 0) & ((d2 - z2).abs() <= max_rel_depth_error * z2.clamp(min=1e-6))
    return uv2, (d1 > 0) & (z2 > 1e-6) & inside & visible


def contrastive_loss_d2(desc1: torch.Tensor, desc2: torch.Tensor, score1: torch.Tensor, score2: torch.Tensor,
                        uv2: torch.Tensor, valid: torch.Tensor, margin: float = 1.5, tau: float = 4.0
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_c: contrastive descriptor loss in both directions, weighted D2-Net style by detection scores.

    desc1, desc2: (B, D, h, w) unit descriptors; score1, score2: (B, 1, h, w) soft detection scores;
    uv2, valid: from ``cell_correspondences`` (correspondence c = (cell n of view 1, uv2[n] in view 2)).
    p(c) = |D1_c - D2_c|; n12(c) = min |D1_c - D2_k| over view-2 cells k with |k - c2| > tau;
    n21(c) likewise from view 2 into view 1. tau is measured on the feature map (cells), like D2-Net's
    safe radius. E(c) = p^2 / 2 + max(0, m - n12)^2 / 2 + p^2 / 2 + max(0, m - n21)^2 / 2 and
    L_c = sum_c s1_c s2_c E(c) / sum_c s1_c s2_c, averaged over the batch (images without any valid
    correspondence contribute 0).
    Returns (loss, {"pos": mean p, "neg": mean min(n12, n21), "matches": mean count}).
    """
    B, _, h, w = desc1.shape
    cells = cell_centres(h, w, desc1)                                                 # (N, 2) pixels
    losses, pos_d, neg_d, counts = [], [], [], []
    for b in range(B):
        m = valid[b]
        counts.append(float(m.sum()))
        if int(m.sum()) == 0:
            losses.append(desc1.sum() * 0.0)
            continue
        d1_all = desc1[b].flatten(1).T                                                # (N, D)
        d2_all = desc2[b].flatten(1).T
        c1 = cells[m]                                                                 # (L, 2) view-1 pixels
        c2 = uv2[b][m]                                                                # (L, 2) view-2 pixels
        d1 = d1_all[m]
        d2 = F.normalize(sample_cells(desc2[b:b + 1], c2[None])[0], dim=-1)
        s1 = score1[b, 0].flatten()[m]
        s2 = sample_cells(score2[b:b + 1], c2[None])[0, :, 0]
        p = (d1 - d2).norm(dim=-1)
        far12 = torch.cdist(c2, cells) / STRIDE > tau                                 # (L, N) view-2 cells
        far21 = torch.cdist(c1, cells) / STRIDE > tau                                 # (L, N) view-1 cells
        big = torch.full((), 4.0, dtype=desc1.dtype, device=desc1.device)
        n12 = torch.where(far12, torch.cdist(d1, d2_all), big).min(dim=1).values
        n21 = torch.where(far21, torch.cdist(d2, d1_all), big).min(dim=1).values
        e = p ** 2 + 0.5 * F.relu(margin - n12) ** 2 + 0.5 * F.relu(margin - n21) ** 2
        wgt = s1 * s2
        losses.append((wgt * e).sum() / wgt.sum().clamp(min=1e-12))
        pos_d.append(float(p.detach().mean()))
        neg_d.append(float(torch.minimum(n12, n21).detach().mean()))
    stats = {"pos": sum(pos_d) / max(len(pos_d), 1), "neg": sum(neg_d) / max(len(neg_d), 1),
             "matches": sum(counts) / B}
    return torch.stack(losses).mean(), stats


def view_synthesis_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean |pred - target| over mask > 0. (B, 1, h, w) each; 0 when the mask is empty."""
    m = mask.to(pred.dtype)
    return ((pred - target).abs() * m).sum() / m.sum().clamp(min=1.0)
