"""Checkpoints in the ecosystem's formats: exported files load with gazelle's / VAT's own loader logic (re-created
here from the official code's description), and official-layout files load through ``load_student``."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import Block
from torch import nn
from transformers import Dinov2Config, Dinov2Model

from gcdr.students.export import export_official, load_student, official_payload, save_checkpoint
from gcdr.students.gazelle import GazeLLE, configured_gazelle_backbone, load_backbone
from gcdr.students.registry import build_student
from gcdr.students.student import Student

# ------------------------------------------------------------------------------- gazelle, as released


class OfficialGazeLLE(nn.Module):
    """The parameter layout of gazelle's ``GazeLLE(backbone, inout, dim, num_layers, in_size)`` as described in
    docs/official-code.md#gaze-lle-decoder-checkpoint-keys (8 heads, MLP ratio 4, in/out MLP 128), on a stand-in
    backbone with parameters of its own (gazelle's loader must ignore them)."""

    def __init__(self, feature_dim: int, grid: int, inout: bool, dim: int, num_layers: int):
        super().__init__()
        self.backbone = nn.Linear(3, feature_dim)
        self.linear = nn.Conv2d(feature_dim, dim, 1)
        self.head_token = nn.Embedding(1, dim)
        self.register_buffer("pos_embed", torch.zeros(dim, grid, grid))
        if inout:
            self.inout_token = nn.Embedding(1, dim)
        self.transformer = nn.Sequential(*[Block(dim=dim, num_heads=8, mlp_ratio=4, drop_path=0.1)
                                           for _ in range(num_layers)])
        self.heatmap_head = nn.Sequential(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
                                          nn.Conv2d(dim, 1, kernel_size=1, bias=False), nn.Sigmoid())
        if inout:
            self.inout_head = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 1),
                                            nn.Sigmoid())


def gazelle_load(model: nn.Module, ckpt_state_dict: dict, include_backbone: bool = False) -> list[str]:
    """gazelle's ``load_gazelle_state_dict``: key sets compared with ``backbone*`` ignored, a warning for keys on one
    side only, the intersection copied, then ``load_state_dict(strict=False)`` (shape mismatches raise).
    Returns the warnings it would print."""
    current = model.state_dict()
    keys1, keys2 = set(current), set(ckpt_state_dict)
    if not include_backbone:
        keys1 = {k for k in keys1 if not k.startswith("backbone")}
        keys2 = {k for k in keys2 if not k.startswith("backbone")}
    warnings = []
    if keys2 - keys1:
        warnings.append(f"WARNING unused keys in provided state dict: {keys2 - keys1}")
    if keys1 - keys2:
        warnings.append(f"WARNING provided state dict does not have values for keys: {keys1 - keys2}")
    for key in keys1 & keys2:
        current[key] = ckpt_state_dict[key]
    model.load_state_dict(current, strict=False)
    return warnings


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> str:
    """A random 32-wide DINOv2 (patch 14) saved as a transformers directory: a backbone name for load_student."""
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                          patch_size=14, image_size=56)
    path = tmp_path_factory.mktemp("dinov2") / "tiny-dinov2"
    Dinov2Model(config).save_pretrained(path)
    return str(path)


def tiny_gazelle(backbone: str, inout: bool, seed: int = 1) -> tuple[Student, dict]:
    """A Gaze-LLE student (``.model``: the GazeLLE) and its model config."""
    torch.manual_seed(seed)
    config = {"model": "gazelle", "backbone": backbone, "inout": inout, "input_size": 56, "dim": 32,
              "num_layers": 2, "num_heads": 8}
    return build_student(config).eval(), config


@pytest.mark.parametrize("inout", [False, True])
def test_exported_gazelle_file_loads_with_gazelles_loader_without_warnings(tiny_dinov2, tmp_path, inout):
    model, config = tiny_gazelle(tiny_dinov2, inout)
    save_checkpoint(tmp_path / "last.pt", model, epoch=3)
    assert export_official(tmp_path / "last.pt", tmp_path / "gazelle_tiny.pt") == "gazelle"

    state = torch.load(tmp_path / "gazelle_tiny.pt", weights_only=True)  # as gazelle's scripts read it
    assert type(state) is dict and all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.startswith("backbone") for k in state)
    assert len(state) == 4 + 11 * 2 + 3 + (5 if inout else 0)  # 40 / 45 keys at 3 layers

    official = OfficialGazeLLE(feature_dim=32, grid=4, inout=inout, dim=32, num_layers=2)
    expected = {k: tuple(v.shape) for k, v in official.state_dict().items() if not k.startswith("backbone")}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert gazelle_load(official, state) == []
    for key, value in official.state_dict().items():
        if not key.startswith("backbone"):
            assert torch.equal(value, model.model.state_dict()[key]), key


@pytest.mark.parametrize("inout", [False, True])
def test_official_gazelle_file_loads_through_load_student_with_the_same_heatmaps(tiny_dinov2, tmp_path, inout):
    model, _ = tiny_gazelle(tiny_dinov2, inout, seed=2)
    torch.save(model.model.decoder_state_dict(), tmp_path / "gazelle_tiny.pt")  # official: plain dict, no backbone
    loaded, checkpoint = load_student(tmp_path / "gazelle_tiny.pt", backbone=tiny_dinov2)
    assert checkpoint["official"] == "gazelle"
    assert checkpoint["model_config"] == {"model": "gazelle", "backbone": tiny_dinov2, "inout": inout,
                                          "input_size": 56, "dim": 32, "num_layers": 2, "num_heads": 8}
    assert not loaded.training
    torch.manual_seed(3)
    images = torch.randn(2, 3, 56, 56)
    boxes = [[(0.1, 0.1, 0.4, 0.5), (0.5, 0.2, 0.9, 0.6)], [(0.3, 0.0, 0.7, 0.3)]]
    with torch.no_grad():
        want, got = model.model(images, boxes), loaded.model(images, boxes)
    for a, b in zip(want["heatmap"], got["heatmap"]):
        assert a.shape[-2:] == (64, 64)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if inout:
        for a, b in zip(want["inout"], got["inout"]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        assert got["inout"] is None


def test_released_vitb14_layout_is_sized_as_gazelle_and_a_wrong_backbone_width_is_named(tmp_path):
    torch.manual_seed(0)
    vitb_width = tmp_path / "dinov2-768"  # a 1-layer DINOv2 of ViT-B/14's width and patch
    Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=32,
                             patch_size=14, image_size=56)).save_pretrained(vitb_width)
    released = GazeLLE(load_backbone(vitb_width)).decoder_state_dict()  # gazelle_dinov2_vitb14.pt's layout
    torch.save(released, tmp_path / "gazelle_dinov2_vitb14.pt")
    _, checkpoint = load_student(tmp_path / "gazelle_dinov2_vitb14.pt", backbone=vitb_width)
    assert checkpoint["model_config"] == {"model": "gazelle", "backbone": str(vitb_width), "inout": False,
                                          "input_size": 448, "dim": 256, "num_layers": 3, "num_heads": 8}
    small = tmp_path / "dinov2-32"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                             patch_size=14, image_size=56)).save_pretrained(small)
    with pytest.raises(ValueError, match="768-d features.*facebook/dinov2-base"):
        load_student(tmp_path / "gazelle_dinov2_vitb14.pt", backbone=small)


# ----------------------------------------------------------------------------------- VAT, as released

def model_spatial_layout(width: int = 64) -> dict[str, tuple[int, ...]]:
    """Key -> shape of VAT's ModelSpatial (docs/official-code.md#vat-spatial-model) with the stem width scaled
    (64 = VAT): two pathways of Bottlenecks [3, 4, 6, 3] + layer5 (2 blocks, planes 4w), attention, heads."""
    w, layout = width, {}

    def bn(name, c):
        layout.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
                       f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()})

    for side, in_channels in (("scene", 4), ("face", 3)):
        layout[f"conv1_{side}.weight"] = (w, in_channels, 7, 7)
        bn(f"bn1_{side}", w)
        inplanes = w
        for layer, (planes, blocks) in enumerate(zip((w, 2 * w, 4 * w, 8 * w, 4 * w), (3, 4, 6, 3, 2)), 1):
            for block in range(blocks):
                name = f"layer{layer}_{side}.{block}"
                layout[f"{name}.conv1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{name}.bn1", planes)
                layout[f"{name}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{name}.bn2", planes)
                layout[f"{name}.conv3.weight"] = (4 * planes, planes, 1, 1)
                bn(f"{name}.bn3", 4 * planes)
                if block == 0:
                    layout[f"{name}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
                    bn(f"{name}.downsample.1", 4 * planes)
                inplanes = 4 * planes
    path = 16 * w  # 1024
    layout.update({"attn.weight": (49, 784 + path), "attn.bias": (49,),
                   "compress_conv1.weight": (path, 2 * path, 1, 1)})
    bn("compress_bn1", path)
    layout["compress_conv2.weight"] = (path // 2, path, 1, 1)
    bn("compress_bn2", path // 2)
    layout["compress_conv1_inout.weight"] = (path // 2, 2 * path, 1, 1)
    bn("compress_bn1_inout", path // 2)
    layout["compress_conv2_inout.weight"] = (1, path // 2, 1, 1)
    bn("compress_bn2_inout", 1)
    layout.update({"fc_inout.weight": (1, 49), "fc_inout.bias": (1,)})
    for i, (cin, cout, k) in enumerate(((path // 2, path // 4, 3), (path // 4, path // 8, 3), (path // 8, 1, 4)), 1):
        layout.update({f"deconv{i}.weight": (cin, cout, k, k), f"deconv{i}.bias": (cout,)})
        bn(f"deconv_bn{i}", cout)
    layout.update({"conv4.weight": (1, 1, 1, 1), "conv4.bias": (1,)})
    return layout


def test_model_spatial_description_is_the_official_one():
    layout = model_spatial_layout(64)
    assert len(layout) == 771
    assert layout["layer5_scene.0.downsample.0.weight"] == (1024, 2048, 1, 1)
    assert layout["attn.weight"] == (49, 1808) and layout["deconv1.weight"] == (512, 256, 3, 3)
    assert layout["compress_conv2_inout.weight"] == (1, 512, 1, 1) and layout["deconv3.weight"] == (128, 1, 4, 4)


def vat_loader(layout: dict[str, tuple[int, ...]], file: dict) -> dict[str, torch.Tensor]:
    """VAT's scripts: ``model_dict = model.state_dict(); model_dict.update(torch.load(f)['model'])``, then a strict
    ``load_state_dict``: no key outside the model, every shape the model's."""
    model_dict = {k: torch.zeros(shape) for k, shape in layout.items()}
    model_dict.update(file["model"])
    assert set(model_dict) == set(layout), f"unexpected keys {sorted(set(model_dict) - set(layout))}"
    bad = {k: (tuple(v.shape), layout[k]) for k, v in model_dict.items() if tuple(v.shape) != layout[k]}
    assert not bad, f"size mismatch {bad}"
    return model_dict


def tiny_vat(backbone: str = "resnet50", width: int = 4, input_size: int = 224, seed: int = 0) -> tuple[Student, dict]:
    """A VAT student (``.model``: the VATSpatial) and its model config."""
    torch.manual_seed(seed)
    config = {"model": "vat", "backbone": backbone, "width": width, "input_size": input_size,
              "zero_init_output": False}
    model = build_student(config)
    for module in model.modules():  # non-trivial BN statistics, so that eval outputs depend on them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    return model.eval(), config


def vat_inputs(size: int = 224, batch: int = 2) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(5)
    head = torch.zeros(batch, 1, size, size)
    head[:, :, size // 8:size // 3, size // 4:size // 2] = 1
    return torch.randn(batch, 3, size, size), head, torch.randn(batch, 3, size, size)


def test_exported_vat_file_loads_with_vats_loader(tmp_path):
    model, config = tiny_vat()
    save_checkpoint(tmp_path / "last.pt", model)
    assert export_official(tmp_path / "last.pt", tmp_path / "model_gazefollow_tiny.pt") == "vat"
    file = torch.load(tmp_path / "model_gazefollow_tiny.pt", weights_only=True)
    assert set(file) == {"model"}
    loaded = vat_loader(model_spatial_layout(4), file)
    assert len(loaded) == 771
    for key, value in model.model.state_dict().items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("backbone, input_size", [("resnet50", 224), ("resnet18", 128)])
def test_official_vat_file_loads_through_load_student_with_the_same_heatmaps(tmp_path, backbone, input_size):
    model, config = tiny_vat(backbone, input_size=input_size, seed=1)
    torch.save({"model": model.model.state_dict()}, tmp_path / "model_gazefollow.pt")  # VAT's layout
    loaded, checkpoint = load_student(tmp_path / "model_gazefollow.pt")
    assert checkpoint["official"] == "vat" and checkpoint["model_config"] == config
    with torch.no_grad():
        (want, want_io), (got, got_io) = model.model(*vat_inputs()), loaded.model(*vat_inputs())
    assert got.shape == (2, 64, 64)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_io, want_io, rtol=0, atol=0)


# ------------------------------------------------------------------------------ command and edge cases

def test_export_command_round_trips_through_load_student(tmp_path):
    from pipelines.export import main

    model, config = tiny_vat(seed=2)
    save_checkpoint(tmp_path / "last.pt", model, epoch=1)
    main(["--ckpt", str(tmp_path / "last.pt"), "--format", "official", "--out", str(tmp_path / "vat.pt")])
    reloaded, checkpoint = load_student(tmp_path / "vat.pt")
    assert checkpoint["model_config"] == config
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(*vat_inputs())[0], model.model(*vat_inputs())[0], rtol=0, atol=0)
    with pytest.raises(SystemExit, match="not a gcdr student checkpoint"):  # already official
        main(["--ckpt", str(tmp_path / "vat.pt"), "--out", str(tmp_path / "again.pt")])


def test_export_refuses_students_the_formats_cannot_hold(tiny_dinov2):
    model, config = tiny_gazelle(tiny_dinov2, inout=False)
    with pytest.raises(ValueError, match="8 attention heads"):
        official_payload({**config, "num_heads": 4}, model.trainable_state_dict())
    vat, vat_config = tiny_vat("resnet18")
    with pytest.raises(ValueError, match="ResNet-50"):
        official_payload(vat_config, vat.trainable_state_dict())


def test_load_student_names_files_it_cannot_read(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither a gcdr student checkpoint"):
        load_student(tmp_path / "other.pt")


def test_configured_backbone_is_resolved_as_training_resolves_it(tmp_path):
    assert configured_gazelle_backbone({}) == "facebook/dinov2-base"
    assert configured_gazelle_backbone({"student": {"gazelle_backbone": "vqa"}, "vqa": {"model": "m/blip"}}) == "m/blip"
    tiny = {"out_root": str(tmp_path), "student": {"gazelle_backbone": "tiny-dinov2"}}
    assert configured_gazelle_backbone(tiny) == str(tmp_path / "models" / "tiny-dinov2")
