"""KP2D authors' checkpoint names -> this project's modules, on synthetic state dicts with their
names and shapes (written out here from their architecture, not from our modules)."""

import pytest
import torch

from kp_vo.errors import ModelFileError
from kp_vo.models import build_model
from kp_vo.models.checkpoints import load_weights, map_kp2d_state_dict, read_state_dict


def bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def conv_bn(prefix, c_out, c_in, k=3):
    return {f"{prefix}.0.weight": (c_out, c_in, k, k), **bn(f"{prefix}.1", c_out)}


def kp2d_vgg_shapes():
    s = {}
    widths = [(32, 3), (32, 32), (64, 32), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256)]
    for (c_out, c_in), name in zip(widths, ["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b"]):
        s.update(conv_bn(f"stem.conv{name}", c_out, c_in))
    for head in ("convDa", "convPa", "convFa", "convFaa"):
        s.update(conv_bn(head, 256, 256))
    s.update(conv_bn("convFb", 512, 256))
    s.update({"convDb.weight": (1, 256, 3, 3), "convDb.bias": (1,), "convPb.weight": (2, 256, 3, 3),
              "convPb.bias": (2,), "convFbb.weight": (256, 256, 3, 3), "convFbb.bias": (256,)})
    return s


def kp2d_resnet_shapes():
    s = {"encoderK.rn.conv1.weight": (64, 3, 7, 7), **bn("encoderK.rn.bn1", 64),
         "encoderK.rn.fc.weight": (1000, 512), "encoderK.rn.fc.bias": (1000,)}
    c_in = 64
    for layer, c in zip(range(1, 5), (64, 128, 256, 512)):
        for block in range(2):
            p = f"encoderK.rn.layer{layer}.{block}"
            s[f"{p}.conv1.weight"] = (c, c_in if block == 0 else c, 3, 3)
            s[f"{p}.conv2.weight"] = (c, c, 3, 3)
            s.update(bn(f"{p}.bn1", c))
            s.update(bn(f"{p}.bn2", c))
            if block == 0 and layer > 1:
                s[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                s.update(bn(f"{p}.downsample.1", c))
        c_in = c
    dec = {"4_0": (256, 512), "4_1": (256, 512), "3_0": (128, 256), "3_1": (128, 256), "2_0": (128, 128),
           "2_1": (128, 192), "1_0": (64, 128), "1_1": (64, 128)}
    for name, (c_out, c_in) in dec.items():
        s.update({k.replace(".0.", ".conv.0.").replace(".1.", ".conv.1."): v
                  for k, v in conv_bn(f"decoderK.upconv{name}", c_out, c_in).items()})
    for head, c, c_out in (("scoreconv", 128, 1), ("locconv", 128, 2), ("featconv", 64, 64)):
        s.update(conv_bn(f"decoderK.{head}", c, c))
        s[f"decoderK.{head}.4.weight"] = (c_out, c, 3, 3)
        s[f"decoderK.{head}.4.bias"] = (c_out,)
    return s


def synthetic(shapes, prefix=""):
    g = torch.Generator().manual_seed(0)
    return {prefix + k: (torch.tensor(7) if v == () else torch.randn(v, generator=g)) for k, v in shapes.items()}


@pytest.mark.parametrize("kind,shapes,prefix,probe", [
    ("keypointnet_vgg", kp2d_vgg_shapes, "", ("convFb.1.running_var", "desc_b.1.running_var")),
    ("keypointnet", kp2d_resnet_shapes, "module.", ("decoderK.scoreconv.4.weight", "score_head.out.weight")),
])
def test_kp2d_state_dict_loads(kind, shapes, prefix, probe):
    state = synthetic(shapes(), prefix)
    model = build_model(kind, descriptor_dim=256 if kind == "keypointnet_vgg" else 64)
    load_weights(model, state, kind)
    theirs, ours = probe
    assert torch.equal(model.state_dict()[ours], state[prefix + theirs])
    mapped = map_kp2d_state_dict(state, kind)
    assert set(mapped) == set(model.state_dict())           # fc dropped, everything else placed
    out = model({"image": torch.randn(1, 3, 32, 32)})
    assert out["descriptor"].shape[1] == (256 if kind == "keypointnet_vgg" else 64)


def test_kp2d_resnet_specific_keys():
    mapped = map_kp2d_state_dict(synthetic(kp2d_resnet_shapes()), "keypointnet")
    assert mapped["encoder.layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    assert mapped["up2b.conv.weight"].shape == (128, 192, 3, 3)
    assert mapped["descriptor_head.hidden.bn.running_mean"].shape == (64,)


def test_mismatches_are_model_file_errors(tmp_path):
    state = synthetic(kp2d_vgg_shapes())
    with pytest.raises(ModelFileError, match="convXYZ"):
        map_kp2d_state_dict({**state, "convXYZ.weight": torch.zeros(1)}, "keypointnet_vgg")
    wrong = dict(state)
    wrong["convDb.weight"] = torch.zeros(1, 128, 3, 3)
    with pytest.raises(ModelFileError, match="score_out.weight"):
        load_weights(build_model("keypointnet_vgg"), wrong, "keypointnet_vgg")
    missing = {k: v for k, v in state.items() if not k.startswith("convPb")}
    with pytest.raises(ModelFileError, match="missing"):
        load_weights(build_model("keypointnet_vgg"), missing, "keypointnet_vgg")
    with pytest.raises(ModelFileError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")


def test_training_checkpoint_tensors_load_the_model_that_fits():
    """A trainer checkpoint ("model/<name>/...", optimizer and RNG tensors beside) loads the one model
    whose parameter names fit; none or several fitting is a ModelFileError naming the models."""
    source = build_model("object_keypointnet", width=8)
    other = build_model("viewsynth", width=4)
    state = {f"model/net/{k}": v for k, v in source.state_dict().items()}
    state.update({f"model/vsn/{k}": v for k, v in other.state_dict().items()})
    state["optim/state/0/exp_avg"] = torch.zeros(3)
    target = build_model("object_keypointnet", width=8)
    load_weights(target, state, "object_keypointnet")
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)
    with pytest.raises(ModelFileError, match=r"models \['net', 'vsn'\], none of which fit keypointnet_vgg"):
        load_weights(build_model("keypointnet_vgg"), state, "keypointnet_vgg")
    twice = {**state, **{f"model/copy/{k}": v for k, v in source.state_dict().items()}}
    with pytest.raises(ModelFileError, match="several of which fit"):
        load_weights(target, twice, "object_keypointnet")
