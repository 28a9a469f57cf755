"""Self-supervised depth losses (KP3D §3.3.2 and appendix E), written from the definitions:
SSIM, the SSIM + L1 photometric error (eq. 10), auto-masking of static pixels, edge-aware
smoothness (eq. 12), and the dense inverse warp used to synthesise the target from a context image.

Images are (B, C, H, W) float in [0, 1]; depth / inverse depth (B, 1, H, W); intrinsics K (B, 3, 3)
in pixels (pixel centres at integer coordinates); poses T_c_t (B, 4, 4) map target-camera
coordinates into the context camera.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_C1 = 0.01 ** 2     # (k1 L)^2 with dynamic range L = 1
SSIM_C2 = 0.03 ** 2     # (k2 L)^2


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Per-pixel SSIM of (B, C, H, W) images over a ``window`` x ``window`` box (reflection padded).

    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    with local means / (co)variances from box averages. Returns (B, C, H, W), 1 where x == y.
    """
    pad = window // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    yp = F.pad(y, (pad, pad, pad, pad), mode="reflect")

    def box(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(z, window, stride=1)

    mu_x, mu_y = box(xp), box(yp)
    var_x = box(xp * xp) - mu_x ** 2
    var_y = box(yp * yp) - mu_y ** 2
    cov = box(xp * yp) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return num / den


def photometric_error(target: torch.Tensor, synth: torch.Tensor, gamma: float = 0.85) -> torch.Tensor:
    """Eq. 10 per pixel: gamma (1 - SSIM) / 2 + (1 - gamma) |I_t - I_hat|, averaged over channels.
    (B, C, H, W) x2 -> (B, 1, H, W) >= 0."""
    dssim = ((1.0 - ssim(target, synth)) / 2.0).clamp(0.0, 1.0)
    l1 = (target - synth).abs()
    return (gamma * dssim + (1.0 - gamma) * l1).mean(dim=1, keepdim=True)


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) depth, (B, 3, 3) K -> (B, 3, H*W) points in the camera frame (pixel-major order)."""
    b, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype, device=depth.device),
                          torch.arange(w, dtype=depth.dtype, device=depth.device), indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)   # (3, HW)
    rays = torch.linalg.inv(K) @ pix.unsqueeze(0)                                          # (B, 3, HW)
    return rays * depth.reshape(b, 1, -1)


def inverse_warp(context: torch.Tensor, depth_t: torch.Tensor, T_c_t: torch.Tensor, K: torch.Tensor,
                 min_depth: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view from ``context``: I_hat(q) = I_c(pi(K, T_c_t pi^-1(q, D_t(q)))).

    context (B, C, H, W); depth_t (B, 1, H, W) target depth; T_c_t (B, 4, 4); K (B, 3, 3).
    Returns (synth (B, C, H, W) bilinear samples, valid (B, 1, H, W) float: projected in front of
    the context camera and inside its image).
    """
    b, _, h, w = depth_t.shape
    points = backproject(depth_t, K)                                                      # (B, 3, HW)
    pc = T_c_t[:, :3, :3] @ points + T_c_t[:, :3, 3:]
    z = pc[:, 2:3]
    in_front = z > min_depth
    uvw = K @ pc
    uv = uvw[:, :2] / z.clamp(min=min_depth)                                              # (B, 2, HW)
    gx = 2.0 * uv[:, 0] / (w - 1) - 1.0
    gy = 2.0 * uv[:, 1] / (h - 1) - 1.0
    grid = torch.stack([gx, gy], -1).view(b, h, w, 2)
    synth = F.grid_sample(context, grid, mode="bilinear", padding_mode="border", align_corners=True)
    tol = 1e-3                                  # px: float32 round-off of K^-1 K at the image border
    inside = ((uv[:, 0] >= -tol) & (uv[:, 0] <= w - 1 + tol) & (uv[:, 1] >= -tol) & (uv[:, 1] <= h - 1 + tol)
              & in_front[:, 0])
    return synth, inside.view(b, 1, h, w).to(context.dtype)


def automasked_photometric_loss(target: torch.Tensor, synths: list[torch.Tensor], contexts: list[torch.Tensor],
                                valids: list[torch.Tensor] | None = None, gamma: float = 0.85,
                                automask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Photometric loss over several context views with auto-masking of static pixels.

    target (B, C, H, W); synths[k] the target synthesised from context k; contexts[k] the raw context
    images; valids[k] (B, 1, H, W) in-view masks. Per pixel the best (minimum) warped error over the
    contexts is used; with ``automask`` a pixel counts only where that warped error is lower than the
    best *unwarped* error L_photo(I_t, I_c) (a pixel that looks the same without any warping is static
    relative to the camera, or textureless, and carries no depth signal).
    Returns (scalar loss, mask (B, 1, H, W) float of the pixels used).
    """
    big = 1e3
    warped = []
    for k, s in enumerate(synths):
        e = photometric_error(target, s, gamma)
        if valids is not None:
            e = torch.where(valids[k] > 0, e, torch.full_like(e, big))
        warped.append(e)
    best_warped = torch.cat(warped, 1).min(dim=1, keepdim=True).values
    mask = (best_warped < big).to(target.dtype)
    if automask:
        unwarped = torch.cat([photometric_error(target, c, gamma) for c in contexts], 1)
        best_unwarped = unwarped.min(dim=1, keepdim=True).values
        mask = mask * (best_warped < best_unwarped).to(target.dtype)
    mask = mask.detach()
    loss = (best_warped * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, mask


def smoothness_loss(inv_depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness (eq. 12) of mean-normalised inverse depth (B, 1, H, W) given the image
    (B, C, H, W): mean |d_x D| exp(-|d_x I|) + mean |d_y D| exp(-|d_y I|). Normalising by the mean
    makes the term scale invariant (it cannot be lowered by shrinking the depth)."""
    d = inv_depth / inv_depth.mean(dim=(2, 3), keepdim=True).clamp(min=1e-7)
    dx_d = (d[..., :, 1:] - d[..., :, :-1]).abs()
    dy_d = (d[..., 1:, :] - d[..., :-1, :]).abs()
    dx_i = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=1, keepdim=True)
    dy_i = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=1, keepdim=True)
    return (dx_d * torch.exp(-dx_i)).mean() + (dy_d * torch.exp(-dy_i)).mean()


def multiscale_photometric_loss(target: torch.Tensor, contexts: list[torch.Tensor], poses: list[torch.Tensor],
                                K: torch.Tensor, inv_depths: list[torch.Tensor], gamma: float = 0.85,
                                automask: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The multi-scale self-supervised depth loss of one target over its context views.

    target (B, C, H, W); contexts[k] (B, C, H, W) with poses[k] (B, 4, 4) = T_c_t (target -> context k);
    K (B, 3, 3) of the full-size images; inv_depths[s] (B, 1, H/2^s, W/2^s) the target's inverse depth at
    scale s, finest first. Every scale is upsampled (bilinear) to H x W before warping, so all scales are
    compared with the full-resolution images; the photometric term is ``automasked_photometric_loss``
    (per-pixel minimum over the contexts, static pixels auto-masked); the edge-aware smoothness is taken
    at each scale's own size against the area-downsampled target and weighted 1 / 2^s.
    Returns (photo, smooth, mask): photo and smooth averaged over the scales (smooth unweighted
    otherwise: the caller applies its weight), mask (B, 1, H, W) the pixels used at scale 0.
    """
    if len(contexts) != len(poses) or not contexts or not inv_depths:
        raise ValueError(f"need one pose per context and at least one scale, got {len(contexts)} contexts, "
                         f"{len(poses)} poses, {len(inv_depths)} scales")
    h, w = target.shape[-2:]
    n = len(inv_depths)
    photo, smooth = 0.0, 0.0
    mask = None
    for s, inv_t in enumerate(inv_depths):
        inv_full = inv_t if inv_t.shape[-2:] == (h, w) else F.interpolate(inv_t, size=(h, w), mode="bilinear",
                                                                           align_corners=False)
        synths, valids = [], []
        for context, T_c_t in zip(contexts, poses):
            synth, valid = inverse_warp(context, 1.0 / inv_full, T_c_t, K)
            synths.append(synth)
            valids.append(valid)
        p_s, mask_s = automasked_photometric_loss(target, synths, contexts, valids, gamma=gamma, automask=automask)
        img_s = target if inv_t.shape[-2:] == (h, w) else F.interpolate(target, size=inv_t.shape[-2:], mode="area")
        photo = photo + p_s / n
        smooth = smooth + smoothness_loss(inv_t, img_s) / (2 ** s) / n
        if s == 0:
            mask = mask_s
    return photo, smooth, mask
