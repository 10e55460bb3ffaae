"""VAT's two-stream encoder (Chong et al., CVPR 2020): the models module that the VAT student and the diffusion
teacher share (the teacher holds one as ``feat_extractor``; docs/official-code.md#vat-spatial-model).

Two ResNet pathways (scene + head channel, face crop), a head-position-conditioned spatial attention over the
scene map, fused into one 7x7 feature. Attribute names = VAT's state-dict keys (``conv1_scene``,
``layer1_scene.0.conv1`` ... ``attn``), so official weights load by name (gcdr.checkpoints.load_vat_weights).
Backbones: ``"resnet50"`` (the official network) and ``"resnet18"`` (a small stand-in for tests and CPU demos,
same key names, other shapes); see gcdr.students.vat for the whole model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

VAT_INPUT_SIZE = 224  # feature grid 7 = 224 / 32; head vector 28 x 28 = the head channel max-pooled 3 times

# backbone name -> (block, blocks per layer 1..4, layer5 blocks, default width)
_BACKBONES: dict[str, tuple[type[nn.Module], tuple[int, int, int, int], int, int]] = {
    "resnet50": (Bottleneck, (3, 4, 6, 3), 2, 64),
    "resnet18": (BasicBlock, (2, 2, 2, 2), 2, 32),
}


def _make_layer(block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """A ResNet stage with torchvision blocks (their sub-keys match VAT's: conv1, bn1, ..., downsample.0/1)."""
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_planes),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_vat_weights(module: nn.Module) -> None:
    """VAT's init: conv weights ~ N(0, sqrt(2 / (k_h k_w out_channels))), BN weight 1 / bias 0, Linear default."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VATEncoder(nn.Module):
    """VAT's two pathways, head-conditioned attention and fusion, up to the fused 7x7 feature.

    forward(scene [B, 3, 224, 224], head_channel [B, 1, 224, 224], face [B, 3, 224, 224])
        -> fused feature [B, out_channels, 7, 7] = cat(attended scene map, face map).
    ``forward_with_attention`` also returns the attention map [B, 1, 7, 7] (softmax over the 49 cells).
    ``extra_attention_inputs`` > 0 (not VAT; VAT-GC's Grad-CAM map): the attention layer also reads an ``extra``
    vector [B, extra_attention_inputs], concatenated as [head vector, extra, face vector]; 0 = VAT exactly.
    """

    def __init__(self, backbone: str = "resnet50", width: int | None = None, input_size: int = VAT_INPUT_SIZE,
                 extra_attention_inputs: int = 0):
        super().__init__()
        if extra_attention_inputs < 0:
            raise ValueError(f"extra_attention_inputs must be >= 0, got {extra_attention_inputs}")
        if backbone not in _BACKBONES:
            raise ValueError(f"unknown VAT backbone {backbone!r}; choose from {sorted(_BACKBONES)}")
        block, blocks, layer5_blocks, default_width = _BACKBONES[backbone]
        width = width or default_width
        self.backbone = backbone
        self.width = width
        self.input_size = input_size
        self.grid = math.ceil(input_size / 32)  # 7; every stride-2 layer rounds up
        head_side = math.ceil(input_size / 8)  # 28
        widths = (width, 2 * width, 4 * width, 8 * width)
        layer5_planes = 4 * width  # resnet50: 256 planes -> 1024 out; resnet18 (width 32): 128 out
        self.pathway_channels = layer5_planes * block.expansion  # 1024 for resnet50
        self.extra_attention_inputs = extra_attention_inputs

        # attribute order = state-dict order = VAT's
        self.conv1_scene = nn.Conv2d(4, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1_scene = nn.BatchNorm2d(width)
        self.layer1_scene, self.layer2_scene, self.layer3_scene, self.layer4_scene, self.layer5_scene = (
            self._pathway(block, width, widths, blocks, layer5_planes, layer5_blocks))
        self.conv1_face = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1_face = nn.BatchNorm2d(width)
        self.layer1_face, self.layer2_face, self.layer3_face, self.layer4_face, self.layer5_face = (
            self._pathway(block, width, widths, blocks, layer5_planes, layer5_blocks))
        self.attn = nn.Linear(head_side * head_side + extra_attention_inputs + self.pathway_channels,
                              self.grid * self.grid)

        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = 2 * self.pathway_channels  # 2048 for resnet50
        init_vat_weights(self)

    @staticmethod
    def _pathway(block, width, widths, blocks, layer5_planes, layer5_blocks) -> list[nn.Sequential]:
        layers, inplanes = [], width
        for planes, n, stride in zip(widths, blocks, (1, 2, 2, 2)):
            layers.append(_make_layer(block, inplanes, planes, n, stride))
            inplanes = planes * block.expansion
        layers.append(_make_layer(block, inplanes, layer5_planes, layer5_blocks, 1))
        return layers

    def _run_pathway(self, x: torch.Tensor, which: str) -> torch.Tensor:
        x = self.maxpool(self.relu(getattr(self, f"bn1_{which}")(getattr(self, f"conv1_{which}")(x))))
        for i in range(1, 6):
            x = getattr(self, f"layer{i}_{which}")(x)
        return x  # [B, C_path, 7, 7]

    def forward_with_attention(self, scene: torch.Tensor, head_channel: torch.Tensor, face: torch.Tensor,
                               extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused [B, out_channels, 7, 7], attention [B, 1, 7, 7]); ``extra`` [B, extra_attention_inputs] when
        the encoder was built with them (else None)."""
        if (extra is None) != (self.extra_attention_inputs == 0):
            raise ValueError(f"this encoder takes {self.extra_attention_inputs} extra attention inputs, got "
                             f"{None if extra is None else tuple(extra.shape)}")
        scene, head_channel, face = self._fit_inputs(scene, head_channel, face)
        face_map = self._run_pathway(face, "face")  # [B, C, 7, 7]
        head_vector = self.maxpool(self.maxpool(self.maxpool(head_channel))).flatten(1)  # [B, 784]
        face_vector = F.adaptive_avg_pool2d(face_map, 1).flatten(1)  # [B, C]
        parts = [head_vector, face_vector] if extra is None else [head_vector, extra.to(face_vector.dtype),
                                                                   face_vector]
        attention = self.attn(torch.cat(parts, dim=1))  # [B, 49]
        attention = F.softmax(attention, dim=1).view(-1, 1, self.grid, self.grid)  # [B, 1, 7, 7]
        scene_map = self._run_pathway(torch.cat([scene, head_channel], dim=1), "scene")  # [B, C, 7, 7]
        fused = torch.cat([attention * scene_map, face_map], dim=1)  # [B, 2C, 7, 7]
        return fused, attention

    def forward(self, scene: torch.Tensor, head_channel: torch.Tensor, face: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_with_attention(scene, head_channel, face, extra)[0]

    def _fit_inputs(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Resize inputs to ``input_size`` (area averaging) when they differ; a no-op for VAT's 224."""
        size = self.input_size
        return tuple(x if x.shape[-1] == size and x.shape[-2] == size else
                     F.interpolate(x, size=(size, size), mode="area") for x in inputs)
