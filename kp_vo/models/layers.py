"""Building blocks shared by the models: conv+BN+activation, the ResNet-18 and VGG-16 trunks.

Written in the project (torchvision does not import beside the CPU torch here). The ResNet-18
parameter names follow the usual layout (``conv1, bn1, layer1.0.conv1, ...``) so ImageNet or
authors' weights map onto them by a prefix rename (see ``kp_vo.models.checkpoints``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.errors import InvalidInputError


class ConvBnAct(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> LeakyReLU (or ELU). (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, c_in: int, c_out: int, act: str = "lrelu", dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.LeakyReLU(0.01) if act == "lrelu" else nn.ELU() if act == "elu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling: (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN with an identity (or 1x1 strided) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNet18Encoder(nn.Module):
    """ResNet-18 trunk without its classifier.

    Input (B, in_channels, H, W) with H, W multiples of 32. Output: list of 5 feature maps with
    ``self.channels`` = width * (1, 1, 2, 4, 8) channels at strides 2, 4, 8, 16, 32; the default width 64
    is ResNet-18: [(B,64,H/2,W/2), (B,64,H/4,W/4), (B,128,H/8,W/8), (B,256,H/16,W/16), (B,512,H/32,W/32)].
    Smaller widths give a reduced trunk (width 32: a quarter of the parameters and multiply-adds).
    """

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        c = tuple(int(width) * m for m in (1, 1, 2, 4, 8))
        self.channels = c
        self.conv1 = nn.Conv2d(in_channels, c[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(c[0], c[1]), BasicBlock(c[1], c[1]))
        self.layer2 = nn.Sequential(BasicBlock(c[1], c[2], 2), BasicBlock(c[2], c[2]))
        self.layer3 = nn.Sequential(BasicBlock(c[2], c[3], 2), BasicBlock(c[3], c[3]))
        self.layer4 = nn.Sequential(BasicBlock(c[3], c[4], 2), BasicBlock(c[4], c[4]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = F.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]


# VGG-16 layer plan up to conv4_3: (name, out_channels) or "pool".
VGG16_TO_CONV4_3 = (("conv1_1", 64), ("conv1_2", 64), "pool", ("conv2_1", 128), ("conv2_2", 128), "pool",
                    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool",
                    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512))


class VGG16Conv4(nn.Module):
    """VGG-16 up to conv4_3 (3x3 conv + bias + ReLU, three 2x2 max pools).

    Input (B, C, H, W), H, W multiples of 8. Output (B, 8 * width, H/8, W/8): conv4_3 after its ReLU
    (non-negative, as D2-Net's detector expects). ``width`` is conv1's channel count: 64 is VGG-16
    (512 output channels); smaller widths scale every layer by width / 64.
    """

    def __init__(self, in_channels: int = 1, width: int = 64):
        super().__init__()
        if width < 1:
            raise InvalidInputError(f"VGG width must be >= 1, got {width}")
        self.layers = nn.ModuleDict()
        self.plan: list[str] = []
        c = in_channels
        for item in VGG16_TO_CONV4_3:
            if item == "pool":
                self.plan.append("pool")
                continue
            name, c_out = item
            c_out = c_out * width // 64
            self.layers[name] = nn.Conv2d(c, c_out, 3, padding=1)
            self.plan.append(name)
            c = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.plan:
            if name == "pool":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = F.relu(self.layers[name](x))
        return x


def cell_centres(hc: int, wc: int, cell: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, hc, wc) pixel coordinates (u, v) of the centres of ``cell``-sized cells, on ``like``'s
    device, float32 or wider (float16 cannot hold sub-pixel positions: its spacing is 1 px past 1024)."""
    step = (cell - 1) / 2.0
    dtype = torch.promote_types(like.dtype, torch.float32)
    v = torch.arange(hc, dtype=dtype, device=like.device) * cell + step
    u = torch.arange(wc, dtype=dtype, device=like.device) * cell + step
    vv = v.view(hc, 1).expand(hc, wc)
    uu = u.view(1, wc).expand(hc, wc)
    return torch.stack([uu, vv], 0).unsqueeze(0)


CELL = 8  # keypoint cell size (stride of the score map) of both KeypointNets


def offset_to_pixels(cells: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Keypoint pixel coordinates from per-cell offsets.

    cells: any (B, C, Hc, Wc) tensor on the 8-pixel cell grid (only its shape/dtype are used).
    offset: (B, 2, Hc, Wc) offset (u, v) in pixels from the cell centre.
    Returns (B, 2, Hc, Wc) = centre + offset (float32 at least, also under float16 autocast), clamped
    to [0, W-1] x [0, H-1] with W = 8 Wc, H = 8 Hc.
    The bounds come from the grid itself so the exported graph stays valid for any input size.
    """
    centres = cell_centres(cells.shape[-2], cells.shape[-1], CELL, cells)
    upper = centres[:, :, -1:, -1:] + (CELL - 1) / 2.0          # (1, 2, 1, 1) = (W - 1, H - 1)
    return torch.minimum(torch.clamp(centres + offset.to(centres.dtype), min=0.0), upper)


def sample_descriptors(dense: torch.Tensor, coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinearly sample a dense descriptor map at pixel coordinates and L2-normalise.

    dense: (B, D, h, w) descriptor map covering an (height, width) image with stride height/h.
    coords: (B, 2, Hc, Wc) pixel coordinates (u, v) in the input image (pixel centres at integers).
    Returns (B, D, Hc, Wc) unit-norm descriptors. With align_corners=False a descriptor cell j of
    stride s is centred on pixel j*s + (s-1)/2, which matches the pixel-centre convention.
    """
    gx = (coords[:, 0] + 0.5) * (2.0 / width) - 1.0
    gy = (coords[:, 1] + 0.5) * (2.0 / height) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(dense, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.normalize(out, p=2.0, dim=1, eps=1e-8)


def zero_border(score: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> same shape with the outermost ring of cells set to 0 (export-friendly)."""
    return F.pad(score[:, :, 1:-1, 1:-1], (1, 1, 1, 1))
