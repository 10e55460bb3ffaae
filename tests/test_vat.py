"""VAT spatial model: official key layout and sizes, the weight loader, forward shapes, init and loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gcdr.students.vat import VATEncoder, VATSpatial, heatmap_mse_loss, inout_bce_loss, load_vat_weights

# docs/official-code.md#vat-state-dict: top-level prefixes in order, and representative (key, shape) pairs
OFFICIAL_PREFIXES = (
    ["conv1_scene", "bn1_scene"] + [f"layer{i}_scene" for i in range(1, 6)]
    + ["conv1_face", "bn1_face"] + [f"layer{i}_face" for i in range(1, 6)]
    + ["attn", "compress_conv1", "compress_bn1", "compress_conv2", "compress_bn2", "compress_conv1_inout",
       "compress_bn1_inout", "compress_conv2_inout", "compress_bn2_inout", "fc_inout", "deconv1", "deconv_bn1",
       "deconv2", "deconv_bn2", "deconv3", "deconv_bn3", "conv4"])
OFFICIAL_SHAPES = {
    "conv1_scene.weight": (64, 4, 7, 7), "conv1_face.weight": (64, 3, 7, 7), "bn1_scene.running_var": (64,),
    "layer1_scene.0.conv1.weight": (64, 64, 1, 1), "layer1_scene.0.conv2.weight": (64, 64, 3, 3),
    "layer1_scene.0.conv3.weight": (256, 64, 1, 1), "layer1_scene.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1_scene.0.downsample.1.weight": (256,), "layer5_scene.0.downsample.0.weight": (1024, 2048, 1, 1),
    "layer5_face.1.conv1.weight": (256, 1024, 1, 1), "layer5_face.1.conv3.weight": (1024, 256, 1, 1),
    "attn.weight": (49, 1808), "attn.bias": (49,), "compress_conv1.weight": (1024, 2048, 1, 1),
    "compress_conv2.weight": (512, 1024, 1, 1), "compress_conv1_inout.weight": (512, 2048, 1, 1),
    "compress_conv2_inout.weight": (1, 512, 1, 1), "fc_inout.weight": (1, 49), "fc_inout.bias": (1,),
    "deconv1.weight": (512, 256, 3, 3), "deconv1.bias": (256,), "deconv2.weight": (256, 128, 3, 3),
    "deconv3.weight": (128, 1, 4, 4), "deconv_bn3.weight": (1,), "conv4.weight": (1, 1, 1, 1), "conv4.bias": (1,),
}


@pytest.fixture(scope="module")
def vat50() -> VATSpatial:
    return VATSpatial("resnet50")


def tiny(**kwargs) -> VATSpatial:
    return VATSpatial("resnet18", width=4, **kwargs)


def test_resnet50_state_dict_matches_the_official_layout(vat50):
    state = vat50.state_dict()
    assert len(state) == 771
    assert sum(p.numel() for p in vat50.parameters()) == 61_451_706
    prefixes = list(dict.fromkeys(key.split(".")[0] for key in state))
    assert prefixes == OFFICIAL_PREFIXES
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert vat50.out_channels == 2048


def test_encoder_keys_are_the_spatial_model_keys_without_heads(vat50):
    encoder_keys = set(VATEncoder("resnet50").state_dict())
    assert encoder_keys < set(vat50.state_dict())
    assert {k.split(".")[0] for k in set(vat50.state_dict()) - encoder_keys} == set(OFFICIAL_PREFIXES[15:])


def test_official_state_dict_loads_strictly_and_through_the_loader(vat50):
    official = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
                for k, v in vat50.state_dict().items()}
    vat50.load_state_dict(official, strict=True)  # the official names and shapes
    vat50.attn.weight.data.zero_()
    report = load_vat_weights(vat50, {"model": {f"module.{k}": v for k, v in official.items()}})  # VAT + DDP
    assert len(report.loaded) == 771 and not report.missing and not report.unexpected
    assert torch.equal(vat50.attn.weight, official["attn.weight"])


def test_loader_reads_files(tmp_path):
    source, target = tiny(), tiny()
    torch.save({"model": source.state_dict()}, tmp_path / "weights.pt")
    report = load_vat_weights(target, tmp_path / "weights.pt")
    assert not report.missing and not report.unexpected
    assert torch.equal(target.deconv2.weight, source.deconv2.weight)


def test_loader_reports_missing_unexpected_and_uses_a_prefix():
    source = tiny()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["attn.weight"] = torch.zeros(3, 3)  # wrong shape: not copied, reported
    state["not_a_key"] = torch.zeros(1)

    class Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.feat_extractor = VATEncoder("resnet18", width=4)
            self.other = nn.Linear(2, 2)

    teacher = Teacher()
    report = load_vat_weights(teacher, {"state_dict": state}, prefix="feat_extractor.")
    assert "feat_extractor.attn.weight" in report.missing
    assert not any(k.startswith("other") for k in report.missing)  # outside the prefix: not VAT's business
    assert {"attn.weight", "not_a_key", "compress_conv1.weight", "conv4.bias"} <= set(report.unexpected)
    assert torch.equal(teacher.feat_extractor.layer3_face[0].conv2.weight, source.layer3_face[0].conv2.weight)


def test_forward_shapes_and_persons_of_one_image_differ():
    torch.manual_seed(0)
    model = tiny().eval()
    scene = torch.randn(1, 3, 224, 224).expand(2, -1, -1, -1)  # one image, two persons
    head = torch.zeros(2, 1, 224, 224)
    head[0, :, 20:60, 20:60] = 1
    head[1, :, 120:170, 150:200] = 1
    face = torch.randn(1, 3, 224, 224).repeat(2, 1, 1, 1)  # even the same face: the head position differs
    with torch.no_grad():
        heatmap, inout = model(scene, head, face)
        fused, attention = model.forward_with_attention(scene, head, face)
    assert heatmap.shape == (2, 64, 64) and inout.shape == (2,)
    assert fused.shape == (2, model.out_channels, 7, 7)
    assert torch.allclose(attention.flatten(1).sum(1), torch.ones(2))
    assert (heatmap[0] - heatmap[1]).abs().max() > 1e-4


def test_small_input_size_still_gives_64x64():
    model = tiny(input_size=64).eval()
    with torch.no_grad():
        heatmap, inout = model(torch.randn(2, 3, 224, 224), torch.zeros(2, 1, 224, 224), torch.randn(2, 3, 224, 224))
    assert heatmap.shape == (2, 64, 64) and model.grid == 2 and model.attn.out_features == 4


def test_init_follows_vat():
    model = VATSpatial("resnet18", width=32)
    conv = model.layer4_scene[0].conv1  # 3x3, 256 out channels, many weights
    expected_std = math.sqrt(2.0 / (3 * 3 * conv.out_channels))
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.05
    assert torch.all(model.bn1_face.weight == 1) and torch.all(model.bn1_face.bias == 0)


def test_heatmap_loss_is_masked_mean_times_amp_and_ignores_excluded_nan():
    pred = torch.zeros(3, 64, 64)
    target = torch.zeros(3, 64, 64)
    target[0, 10, 10] = 1.0  # mse of row 0 = 1 / 4096
    target[1] = 0.5  # mse 0.25
    target[2] = float("nan")  # excluded row: must not poison the loss
    mask = torch.tensor([True, True, False])
    loss = heatmap_mse_loss(pred, target, mask)
    assert loss.item() == pytest.approx(10000 * (1 / 4096 + 0.25) / 2, rel=1e-5)
    weighted = heatmap_mse_loss(pred, target, mask, weight=torch.tensor([1.0, 0.5, 1.0]))
    assert weighted.item() == pytest.approx(10000 * (1 / 4096 + 0.125) / 2, rel=1e-5)
    assert heatmap_mse_loss(pred, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_inout_loss_skips_unknown_rows():
    logits = torch.tensor([10.0, -10.0, 3.0])
    labels = torch.tensor([1.0, 0.0, -1.0])
    assert inout_bce_loss(logits, labels).item() < 1e-3
    assert inout_bce_loss(logits, torch.tensor([0.0, 1.0, -1.0]), weight=2.0).item() > 15
