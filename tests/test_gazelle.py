"""Gaze-LLE: official checkpoint keys and sizes, positional code, head maps, multi-person forward, I/O."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from gcdr.heatmaps import head_box_grid_mask
from gcdr.students.gazelle import (
    Dinov2Backbone,
    GazeLLE,
    count_learnable_parameters,
    sinusoidal_pos_embed_2d,
)

# docs/official-code.md#gaze-lle-decoder-checkpoint-keys, ViT-B/14 at 448 px
OFFICIAL_SHAPES = {
    "pos_embed": (256, 32, 32), "linear.weight": (256, 768, 1, 1), "linear.bias": (256,),
    "head_token.weight": (1, 256),
    **{f"transformer.{i}.{name}": shape for i in range(3) for name, shape in {
        "norm1.weight": (256,), "norm1.bias": (256,), "attn.qkv.weight": (768, 256),
        "attn.proj.weight": (256, 256), "attn.proj.bias": (256,), "norm2.weight": (256,), "norm2.bias": (256,),
        "mlp.fc1.weight": (1024, 256), "mlp.fc1.bias": (1024,), "mlp.fc2.weight": (256, 1024),
        "mlp.fc2.bias": (256,)}.items()},
    "heatmap_head.0.weight": (256, 256, 2, 2), "heatmap_head.0.bias": (256,), "heatmap_head.1.weight": (1, 256, 1, 1),
}
INOUT_SHAPES = {"inout_token.weight": (1, 256), "inout_head.0.weight": (128, 256), "inout_head.0.bias": (128,),
                "inout_head.3.weight": (1, 128), "inout_head.3.bias": (1,)}


def dinov2(hidden_size: int = 32, **kwargs) -> Dinov2Backbone:
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                          patch_size=14, image_size=56, **kwargs)
    return Dinov2Backbone(Dinov2Model(config))


@pytest.fixture(scope="module")
def vitb_width_backbone() -> Dinov2Backbone:
    return dinov2(hidden_size=768)


@pytest.mark.parametrize("inout", [False, True])
def test_decoder_state_matches_official_checkpoints(vitb_width_backbone, inout):
    model = GazeLLE(vitb_width_backbone, inout=inout)
    state = model.decoder_state_dict()
    expected = dict(OFFICIAL_SHAPES, **(INOUT_SHAPES if inout else {}))
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert len(state) == (45 if inout else 40)
    assert count_learnable_parameters(model) == (2_860_033 if inout else 2_826_752)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_official_checkpoint_loads_strictly_and_a_gazefollow_one_into_an_inout_model(vitb_width_backbone, tmp_path):
    torch.manual_seed(1)
    official = {k: torch.randn(shape) for k, shape in OFFICIAL_SHAPES.items()}
    official["pos_embed"] = sinusoidal_pos_embed_2d(256, 32, 32)
    plain = GazeLLE(vitb_width_backbone)
    report = plain.load_decoder_state_dict(official)
    assert not report.missing and not report.unexpected
    assert torch.equal(plain.transformer[2].mlp.fc2.weight, official["transformer.2.mlp.fc2.weight"])
    torch.save(official, tmp_path / "gazelle_dinov2_vitb14.pt")  # official: a plain dict, no backbone keys
    with_inout = GazeLLE(vitb_width_backbone, inout=True)
    report = with_inout.load_decoder_state_dict(tmp_path / "gazelle_dinov2_vitb14.pt")
    assert sorted(report.missing) == sorted(INOUT_SHAPES) and not report.unexpected
    assert torch.equal(with_inout.head_token.weight, official["head_token.weight"])


def test_save_excludes_backbone_and_round_trips():
    backbone = dinov2()
    source, target = GazeLLE(backbone, input_size=56), GazeLLE(backbone, input_size=56)
    state = source.decoder_state_dict()
    assert state and not any(k.startswith("backbone") for k in state)
    assert any(k.startswith("backbone") for k in source.state_dict())
    report = target.load_decoder_state_dict({**state, "backbone.model.layernorm.weight": torch.zeros(32)})
    assert not report.missing and not report.unexpected  # backbone keys ignored on both sides
    for key, value in state.items():
        assert torch.equal(target.decoder_state_dict()[key], value)


def test_pos_embed_is_the_2d_sine_cosine_code():
    code = sinusoidal_pos_embed_2d(256, 32, 32)  # [256, rows, cols]
    omega = [10000 ** (-2 * i / 128) for i in range(64)]
    for i, x, y in [(0, 5, 7), (3, 31, 0), (63, 12, 30)]:
        assert code[2 * i, y, x].item() == pytest.approx(math.sin(x * omega[i]), abs=1e-6)
        assert code[2 * i + 1, y, x].item() == pytest.approx(math.cos(x * omega[i]), abs=1e-6)
        assert code[128 + 2 * i, y, x].item() == pytest.approx(math.sin(y * omega[i]), abs=1e-6)
        assert code[128 + 2 * i + 1, y, x].item() == pytest.approx(math.cos(y * omega[i]), abs=1e-6)
    assert torch.equal(code[:128, 0], code[:128, 17])  # x half constant along rows
    assert torch.equal(code[128:, :, 0], code[128:, :, 9])  # y half constant along columns


def test_head_map_uses_python_round_half_to_even():
    mask = head_box_grid_mask((2.5 / 32, 3.5 / 32, 6.5 / 32, 5.5 / 32), 32)
    # round(2.5) = 2, round(3.5) = 4, round(6.5) = 6, round(5.5) = 6: rows 4..5, cols 2..5
    assert mask.shape == (32, 32) and mask.sum() == 2 * 4 and mask[4:6, 2:6].all()


def test_model_head_maps_are_the_batched_masks_and_none_is_empty(vitb_width_backbone):
    model = GazeLLE(vitb_width_backbone)  # 32x32 tokens
    torch.manual_seed(0)
    xs, ys = torch.rand(20, 2).sort(dim=1).values, torch.rand(20, 2).sort(dim=1).values
    boxes = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)  # [20, 4]
    per_box = model.head_maps([box.tolist() for box in boxes] + [None])
    assert torch.equal(per_box[:-1], head_box_grid_mask(boxes, model.grid)) and per_box[-1].sum() == 0
    assert per_box[:-1].sum(dim=(1, 2)).gt(0).float().mean() > 0.5  # mostly non-empty boxes
    assert model.head_maps([]).shape == (0, 32, 32)
    with pytest.raises(ValueError, match="finite"):
        model.head_maps([(0.1, float("nan"), 0.2, 0.3)])


class CountingBackbone(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.inner, self.calls, self.images = backbone, 0, 0
        self.hidden_size, self.patch_size = backbone.hidden_size, backbone.patch_size

    def forward(self, images):
        self.calls += 1
        self.images += len(images)
        return self.inner(images)


def test_multi_person_forward_encodes_each_image_once_and_heads_differ():
    backbone = CountingBackbone(dinov2())
    model = GazeLLE(backbone, inout=True, input_size=112).eval()  # 8x8 tokens, heatmap resized to 64
    images = torch.randn(2, 3, 112, 112)
    boxes = [[(0.0, 0.0, 0.25, 0.25), (0.6, 0.5, 0.9, 0.8), None], [(0.4, 0.1, 0.6, 0.3)]]
    with torch.no_grad():
        out = model(images, boxes)
    assert backbone.calls == 1 and backbone.images == 2
    assert [h.shape for h in out["heatmap"]] == [(3, 64, 64), (1, 64, 64)]
    assert [p.shape for p in out["inout"]] == [(3,), (1,)]
    first = out["heatmap"][0]
    assert (first[0] - first[1]).abs().max() > 1e-4 and (first[1] - first[2]).abs().max() > 1e-4
    assert 0 <= first.min() and first.max() <= 1
    with torch.no_grad():  # the same person alone gives the same map
        alone = model(images[:1], [[boxes[0][1]]])["heatmap"][0][0]
    assert torch.allclose(alone, first[1], atol=1e-5)


def test_backbone_drops_cls_and_register_tokens_and_stays_frozen(tmp_path):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=32, patch_size=14, image_size=56, num_register_tokens=4)
    Dinov2WithRegistersModel(config).save_pretrained(tmp_path / "dinov2-reg")
    backbone = Dinov2Backbone.from_pretrained(tmp_path / "dinov2-reg")  # a local directory
    images = torch.randn(2, 3, 56, 84)
    features = backbone(images)  # [2, 32, 4, 6]
    tokens = backbone.model(pixel_values=images).last_hidden_state  # [2, 1 + 4 + 24, 32]
    assert features.shape == (2, 32, 4, 6)
    assert torch.allclose(features[:, :, 1, 2], tokens[:, 5 + 1 * 6 + 2])  # row-major patch order
    backbone.train()
    assert not backbone.model.training
