"""A DepthNet ONNX export back to trainable ``.safetensors`` weights (the ``depthnet_selfsup`` recipe's
``model.depthnet_weights``), so that a shipped DepthNet can be fine-tuned when its training run is gone.

    python scripts/depthnet_onnx_to_safetensors.py models/depthnet.onnx depthnet_init.safetensors \
        --calibrate ../shared/data/kitti --sequence 00 --frames 0 180

What an export keeps and what it loses:
- the decoder's convolutions keep their names and are copied (fp16 weights are widened to float32);
- the encoder's BatchNorm layers were folded into the convolutions before them (W' = W g / sqrt(v + eps),
  b' = b - m g / sqrt(v + eps)): the folded W' becomes the convolution's weight and the BatchNorm is set so
  that it adds b' back. With running mean 0 and variance 1 the network would compute the same function in
  eval mode but not in training mode (batch statistics). So the BatchNorm statistics are *calibrated*: the
  per-channel mean m_c and variance v_c of W' x on the calibration images (network input size, the export's
  ``kp_vo.trained_input_hw``) become the running statistics, and gamma = sqrt(v_c + eps), beta = b' + m_c,
  which is the exported function exactly in eval mode and on batches like the calibration images in
  training mode;
- the coarser disparity heads (``disp.1..3``, used only by the multi-scale training loss) are not in the
  export: they start at zero (a constant sigmoid(0) disparity; zero weights pass no gradient back into
  the shared features until they have learnt something).
The script checks the result against ONNX Runtime on the calibration images and prints the largest
relative difference of the inverse depth.
"""

from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn


def onnx_conv_weights(path: str) -> tuple[list[tuple[str, np.ndarray, np.ndarray | None]], dict[str, str]]:
    """[(initializer name, weight, bias or None)] of the graph's Conv nodes in graph order, and the metadata."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:                    # Cast (fp16 -> fp32) and Constant producers of tensors
        if node.op_type == "Cast" and node.input[0] in inits:
            consts[node.output[0]] = node.input[0]
    def value(name):
        name = consts.get(name, name)
        return name, inits.get(name)
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        wname, w = value(node.input[1])
        b = value(node.input[2])[1] if len(node.input) > 2 and node.input[2] else None
        if w is None:
            raise SystemExit(f"Conv {node.name}: weight {node.input[1]} is not a (cast) initializer")
        convs.append((wname, w, b))
    return convs, {p.key: p.value for p in model.metadata_props}


def calibration_images(root: str, sequence: str, frames: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    from kp_vo.datasets.kitti import KittiOdometry
    seq = KittiOdometry(root, sequence=sequence)
    h, w = hw
    out = []
    for i in range(frames[0], min(frames[1], len(seq))):
        img = seq[i].image
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx")
    ap.add_argument("output")
    ap.add_argument("--calibrate", required=True, help="KITTI odometry root of the calibration images")
    ap.add_argument("--sequence", default="00")
    ap.add_argument("--frames", type=int, nargs=2, default=(0, 180), help="first, end (exclusive)")
    args = ap.parse_args(argv)

    from safetensors.torch import save_file
    from kp_vo.models import build_model
    from kp_vo.training.recipes.kp3d import normalise_input

    convs, meta = onnx_conv_weights(args.onnx)
    opts = json.loads(meta["kp_vo.options"])
    hw = tuple(int(v) for v in meta["kp_vo.trained_input_hw"].split("x"))
    net = build_model("depthnet", **opts).eval()

    named = {id(m): n for n, m in net.named_modules()}
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net({"image": torch.zeros(1, 3, *hw)})
    for h in hooks:
        h.remove()
    modules = dict(net.named_modules())
    # the BatchNorm that follows each bias-free convolution (ResNet naming: convK -> bnK, downsample.0 -> .1)
    def bn_of(conv_name: str) -> nn.BatchNorm2d | None:
        base, last = conv_name.rsplit(".", 1)
        cand = f"{base}.{last.replace('conv', 'bn')}" if last.startswith("conv") else f"{base}.{int(last) + 1}"
        m = modules.get(cand)
        return m if isinstance(m, nn.BatchNorm2d) else None

    used = [False] * len(convs)
    folded: list[tuple[nn.Conv2d, nn.BatchNorm2d, torch.Tensor]] = []
    seen = set()
    for conv in order:
        if id(conv) in seen:
            continue
        seen.add(id(conv))
        k = next((j for j, (_, w, _) in enumerate(convs) if not used[j] and w.shape == tuple(conv.weight.shape)), None)
        if k is None:
            raise SystemExit(f"{named[id(conv)]}: no ONNX convolution of shape {tuple(conv.weight.shape)}")
        used[k] = True
        wname, w, b = convs[k]
        if not wname.startswith("onnx::") and not wname.startswith("model." + named[id(conv)]):
            raise SystemExit(f"{named[id(conv)]} matched ONNX {wname}")
        conv.weight.data = torch.from_numpy(w).clone()
        bn = bn_of(named[id(conv)])
        if conv.bias is not None:
            conv.bias.data = torch.from_numpy(b).clone()
        elif bn is not None:
            folded.append((conv, bn, torch.from_numpy(b if b is not None else np.zeros(w.shape[0], np.float32))))
        else:
            raise SystemExit(f"{named[id(conv)]}: no bias and no BatchNorm")
    # convs not run at inference (the coarse disparity heads)
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and id(m) not in seen:
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            print(f"{name}: not in the export, zero-initialised")
    if not all(used):
        raise SystemExit(f"{used.count(False)} ONNX convolutions left unmatched")

    # pass 1: BatchNorms as "add b'" (eval mode): the exported function; record the statistics of W' x
    for conv, bn, b in folded:
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.data.fill_(1.0)
        bn.bias.data = b.clone()
    stats = {}
    def rec(conv):
        def hook(mod, inputs, out):
            y = out.detach().double()
            stats[id(mod)] = (y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False))
        return hook
    hooks = [conv.register_forward_hook(rec(conv)) for conv, _, _ in folded]
    images = calibration_images(args.calibrate, args.sequence, tuple(args.frames), hw)
    x = normalise_input(images, net)
    with torch.no_grad():
        ref = net({"image": x})["inv_depth"]
    for h in hooks:
        h.remove()
    for conv, bn, b in folded:
        m, v = stats[id(conv)]
        bn.running_mean.copy_(m.float())
        bn.running_var.copy_(v.float())
        bn.weight.data = torch.sqrt(v + bn.eps).float()
        bn.bias.data = (b.double() + m).float()

    import onnxruntime as ort
    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    ort_out = sess.run(["inv_depth"], {"image": x.numpy()})[0]
    with torch.no_grad():
        ev = net({"image": x})["inv_depth"].numpy()
        net.train()
        tr = net({"image": x})["inv_depth"].numpy()
        net.eval()
    def rel(a):
        return float(np.max(np.abs(a - ort_out) / np.abs(ort_out)))

    print(f"calibration images: {len(images)}; max relative inverse-depth difference to ONNX Runtime: "
          f"eval mode {rel(ev):.2e}, training mode (batch statistics of all {len(images)}) {rel(tr):.2e}, "
          f"before calibration {rel(ref.numpy()):.2e}")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, args.output, metadata={"source": args.onnx, "kp_vo.options": meta["kp_vo.options"]})
    print(f"wrote {args.output} ({len(state)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
