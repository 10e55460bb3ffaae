"""VAT spatial model (Chong et al., CVPR 2020, ``ModelSpatial``), key-compatible with the official weights.

Two ResNet pathways (scene + head channel, face crop), a head-position-conditioned spatial attention
over the scene map, and two heads on the fused 7x7 feature: a deconvolution heatmap head (raw values,
no sigmoid, trained by MSE x 10000 toward a [0, 1] Gaussian) and an in/out logit head
(docs/official-code.md#vat-spatial-model). State-dict keys are exactly VAT's (``conv1_scene``, ``layer1_scene.0.conv1`` ...
``attn``, ``compress_conv1`` ... ``conv4``), so ``initial_weights_for_spatial_training.pt`` and
``model_gazefollow.pt`` load by name; the GCDR diffusion teacher holds a :class:`VATEncoder` as
``feat_extractor`` (keys ``feat_extractor.conv1_scene.weight`` ...).

Backbones:
- ``"resnet50"``: the official network (Bottleneck [3, 4, 6, 3] + layer5 of 2 Bottlenecks, 1024-channel
  pathways, fused 2048 channels; 771 state entries, 61,451,706 parameters for :class:`VATSpatial`).
- ``"resnet18"``: a small stand-in for tests and CPU demos (BasicBlock [2, 2, 2, 2] + layer5 of 2
  BasicBlocks), channel widths ``width x (1, 2, 4, 8)`` and layer5 ``4 x width`` (default width 32:
  128-channel pathways, fused 256). Same key names, different shapes; official weights do not fit.

Both take a 224x224 scene, a 224x224 head channel and a 224x224 face crop; the fused feature is 7x7.
``input_size`` other than 224 (a CPU-demo option, not VAT) resizes the three inputs to that side, so the
feature grid is ceil(S / 32), the head vector ceil(S / 8)^2 and the heatmap is resized to 64x64 at the end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gcdr.checkpoints import LoadReport, load_vat_weights, read_state_dict  # noqa: F401 (re-exported)
from gcdr.encoders import VAT_INPUT_SIZE, VATEncoder, init_vat_weights  # noqa: F401 (re-exported)
from gcdr.heatmaps import HEATMAP_SIZE
from gcdr.pseudolabels import PseudoLabelFolder, PseudoLabelFolders
from gcdr.students.student import Student

if TYPE_CHECKING:
    from gcdr.students.config import StudentConfig

log = logging.getLogger(__name__)

HEATMAP_AMP_FACTOR = 10000.0  # VAT's "amp factor" on the per-pixel MSE
OFFICIAL_VAT = {"backbone": "resnet50", "width": 64, "input_size": VAT_INPUT_SIZE}  # VAT's ModelSpatial
GRADCAM_INPUTS = (HEATMAP_SIZE // 4) ** 2  # VAT-GC: the 64x64 Grad-CAM map max-pooled twice -> 16x16 = 256


class VATSpatial(VATEncoder):
    """VAT ``ModelSpatial``: :class:`VATEncoder` plus the heatmap and in/out heads (flat VAT keys).

    forward(scene, head_channel, face) -> (heatmap [B, 64, 64] raw (no sigmoid), inout logit [B]).
    ``gradcam_input`` (VAT-GC, GCDR's ``baseline_gradcam`` teacher; not VAT): forward also takes the person's
    Grad-CAM map [B, 64, 64], max-pooled twice (kernel 3, stride 2, padding 1) to 16x16 and fed to the attention
    layer between the head vector and the face vector (``attn``: 784 + 256 + 1024 inputs at VAT's size).
    ``zero_init_output``: start the last 1x1 conv at zero (output 0 everywhere) instead of VAT's random
    init, whose O(1) output offset takes Adam thousands of steps to remove from scratch (a short-budget
    option; irrelevant when official initial weights are loaded).
    """

    def __init__(self, backbone: str = "resnet50", width: int | None = None, input_size: int = VAT_INPUT_SIZE,
                 zero_init_output: bool = False, gradcam_input: bool = False):
        super().__init__(backbone, width, input_size, extra_attention_inputs=GRADCAM_INPUTS if gradcam_input else 0)
        self.gradcam_input = gradcam_input
        fused = self.out_channels  # 2048 for resnet50
        c1, c2, c3, c4 = fused // 2, fused // 4, fused // 8, fused // 16  # 1024, 512, 256, 128
        self.compress_conv1 = nn.Conv2d(fused, c1, kernel_size=1, bias=False)
        self.compress_bn1 = nn.BatchNorm2d(c1)
        self.compress_conv2 = nn.Conv2d(c1, c2, kernel_size=1, bias=False)
        self.compress_bn2 = nn.BatchNorm2d(c2)
        self.compress_conv1_inout = nn.Conv2d(fused, c2, kernel_size=1, bias=False)
        self.compress_bn1_inout = nn.BatchNorm2d(c2)
        self.compress_conv2_inout = nn.Conv2d(c2, 1, kernel_size=1, bias=False)
        self.compress_bn2_inout = nn.BatchNorm2d(1)
        self.fc_inout = nn.Linear(self.grid * self.grid, 1)
        self.deconv1 = nn.ConvTranspose2d(c2, c3, kernel_size=3, stride=2)  # 7 -> 15
        self.deconv_bn1 = nn.BatchNorm2d(c3)
        self.deconv2 = nn.ConvTranspose2d(c3, c4, kernel_size=3, stride=2)  # 15 -> 31
        self.deconv_bn2 = nn.BatchNorm2d(c4)
        self.deconv3 = nn.ConvTranspose2d(c4, 1, kernel_size=4, stride=2)  # 31 -> 64
        self.deconv_bn3 = nn.BatchNorm2d(1)
        self.conv4 = nn.Conv2d(1, 1, kernel_size=1, stride=1)
        init_vat_weights(self)
        if zero_init_output:
            nn.init.zeros_(self.conv4.weight)
            nn.init.zeros_(self.conv4.bias)

    def heads(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused [B, C, 7, 7] -> (heatmap [B, 64, 64] raw, inout logit [B])."""
        x = self.relu(self.compress_bn1_inout(self.compress_conv1_inout(fused)))  # [B, C/4, 7, 7]
        x = self.relu(self.compress_bn2_inout(self.compress_conv2_inout(x)))  # [B, 1, 7, 7]
        inout_logit = self.fc_inout(x.flatten(1)).squeeze(1)  # [B]

        x = self.relu(self.compress_bn1(self.compress_conv1(fused)))  # [B, C/2, 7, 7]
        x = self.relu(self.compress_bn2(self.compress_conv2(x)))  # [B, C/4, 7, 7]
        x = self.relu(self.deconv_bn1(self.deconv1(x)))  # [B, C/8, 15, 15]
        x = self.relu(self.deconv_bn2(self.deconv2(x)))  # [B, C/16, 31, 31]
        x = self.relu(self.deconv_bn3(self.deconv3(x)))  # [B, 1, 64, 64]
        x = self.conv4(x)
        if x.shape[-1] != HEATMAP_SIZE:  # only for input_size != 224 (8 * grid + 8 cells)
            x = F.interpolate(x, size=(HEATMAP_SIZE, HEATMAP_SIZE), mode="bilinear", align_corners=False)
        heatmap = x.squeeze(1)  # [B, 64, 64]
        return heatmap, inout_logit

    def forward(self, scene: torch.Tensor, head_channel: torch.Tensor, face: torch.Tensor,
                gradcam_64: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if (gradcam_64 is None) == self.gradcam_input:
            raise ValueError("a VAT-GC model needs the Grad-CAM map (gradcam_64 [B, 64, 64]); a VAT model takes none")
        if gradcam_64 is None:
            return self.heads(super().forward(scene, head_channel, face))
        return self.heads(super().forward(scene, head_channel, face, self.gradcam_vector(gradcam_64)))

    def gradcam_vector(self, gradcam_64: torch.Tensor) -> torch.Tensor:
        """Grad-CAM [B, 64, 64] -> max-pooled twice (3, stride 2, padding 1) -> [B, 256] (16x16 flattened)."""
        if tuple(gradcam_64.shape[-2:]) != (HEATMAP_SIZE, HEATMAP_SIZE):
            raise ValueError(f"Grad-CAM maps must be [B, 64, 64], got {tuple(gradcam_64.shape)}")
        x = gradcam_64.reshape(-1, 1, HEATMAP_SIZE, HEATMAP_SIZE).float()
        return self.maxpool(self.maxpool(x)).flatten(1)  # [B, 256]


# ----------------------------------------------------------------------------------------------- losses

def heatmap_mse_loss(pred_64: torch.Tensor, target_64: torch.Tensor, mask: torch.Tensor | None = None,
                     weight: torch.Tensor | None = None, amp_factor: float = HEATMAP_AMP_FACTOR) -> torch.Tensor:
    """VAT's heatmap loss: per-sample mean over 64x64 of (pred - target)^2, masked, x ``amp_factor``.

    pred_64, target_64: [B, 64, 64]; mask: [B] bool (rows that count; None = all); weight: [B] per-row
    weight (e.g. pseudo-label weight), applied inside the sum. Returns the scalar
    amp * sum_mask(w_i * mse_i) / #mask (0 with a graph when the mask is empty). Rows are selected,
    not multiplied by 0, so a NaN in an excluded target cannot leak in (docs/method.md#losses).
    """
    per_sample = (pred_64.float() - target_64.float()).pow(2).flatten(1).mean(1)  # [B]
    return masked_row_mean(per_sample, mask, weight) * amp_factor


def masked_row_mean(per_sample: torch.Tensor, mask: torch.Tensor | None = None,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """sum_mask(w_i * loss_i) / #mask over rows [B]; 0 (with a graph) when no row counts.

    Rows are selected, not multiplied by 0, so a NaN in an excluded row cannot leak in (docs/method.md#losses).
    """
    mask = torch.ones_like(per_sample, dtype=torch.bool) if mask is None else mask.bool()
    if weight is not None:
        per_sample = per_sample * weight.float()
    return per_sample[mask].sum() / mask.sum().clamp(min=1)  # empty selection: 0, still in the graph


def inout_bce_loss(inout_logit: torch.Tensor, inout: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """BCE-with-logits of the in/out logit [B] against labels [B] (1 in, 0 out); rows with -1 are skipped."""
    known = inout >= 0
    if not known.any():
        return inout_logit.sum() * 0.0
    return weight * F.binary_cross_entropy_with_logits(inout_logit[known].float(), inout[known].float())


# ------------------------------------------------------------------------------------------ weight loading

def vat_size_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, str | int]:
    """The :class:`VATSpatial` arguments a VAT state dict (flat ``ModelSpatial`` keys) was saved from.

    Returns {"backbone": resnet50 (Bottleneck keys ``conv3``) | resnet18, "width": the stem's channels
    (64 = VAT), "input_size": 8 x the head-vector side (224 = VAT; the smallest side consistent with the
    attention layer's shape)}.
    """
    required = ("conv1_scene.weight", "attn.weight", "compress_conv1.weight", "conv4.weight")
    absent = [k for k in required if k not in state]
    if absent:
        raise ValueError(f"not a VAT ModelSpatial state dict: no {absent}")
    backbone = "resnet50" if "layer1_scene.0.conv3.weight" in state else "resnet18"
    width = int(state["conv1_scene.weight"].shape[0])
    pathway_channels = int(state["compress_conv1.weight"].shape[1]) // 2
    grid_cells, attn_in = (int(n) for n in state["attn.weight"].shape)
    head_side = math.isqrt(max(attn_in - pathway_channels, 0))
    input_size = 8 * head_side
    if head_side * head_side != attn_in - pathway_channels or math.ceil(input_size / 32) ** 2 != grid_cells:
        raise ValueError(f"attn.weight {tuple(state['attn.weight'].shape)} fits no VAT input size "
                         f"({pathway_channels}-channel pathways)")
    return {"backbone": backbone, "width": width, "input_size": input_size}


# ---------------------------------------------------------------------------------------------- student

@dataclass
class VATModelConfig:
    """What rebuilds a VAT student (``config.json``): the :class:`VATSpatial` arguments."""

    backbone: str = "resnet50"
    width: int | None = None
    input_size: int = VAT_INPUT_SIZE
    zero_init_output: bool = False


class VATStudent(Student):
    """VAT as a student (gcdr.students.student): :class:`VATSpatial` on VAT-style inputs (scene, head channel,
    face), MSE x ``amp_factor`` on its raw heatmap; every weight is trained and saved (771 entries)."""

    name = "vat"
    config_class = VATModelConfig
    style = "vat"
    protocol = "gcdr"
    lr_schedule = "multistep"  # GCDR: x0.2 at 60 % of the epochs
    lr_field = "lr"
    inout_is_logit = True

    gradcam_input: ClassVar[bool] = False  # VATGCStudent: the Grad-CAM map is an input of the attention layer

    def __init__(self, config: VATModelConfig):
        super().__init__(config)
        self.model = VATSpatial(config.backbone, width=config.width, input_size=config.input_size,
                                zero_init_output=config.zero_init_output, gradcam_input=self.gradcam_input)

    @classmethod
    def config_from(cls, student: StudentConfig, out_root: str | Path | None = None) -> VATModelConfig:
        return VATModelConfig(backbone=student.backbone, width=student.vat_width, input_size=student.vat_input_size,
                              zero_init_output=student.vat_zero_init_output)

    def forward(self, batch: dict[str, torch.Tensor],
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw heatmap [B, 64, 64], in/out logit [B]); VAT has no sigmoid, so ``return_logits`` changes nothing."""
        return self.model(batch["scene"], batch["head_channel"], batch["face"])

    @staticmethod
    def heatmap_loss(heatmap_logits: torch.Tensor, target_64: torch.Tensor, mask: torch.Tensor,
                     weight: torch.Tensor, cfg: StudentConfig) -> torch.Tensor:
        return heatmap_mse_loss(heatmap_logits, target_64, mask, weight, amp_factor=cfg.amp_factor)

    def load_init_weights(self, path: str | Path) -> LoadReport:
        """VAT's files (e.g. initial_weights_for_spatial_training.pt) by name + shape matching."""
        return load_vat_weights(self.model, path)

    # -- VAT's own files (``{"model": ModelSpatial state}``, docs/official-code.md#vat-weight-files-and-loading)
    @classmethod
    def reads_official(cls, state: Mapping[str, torch.Tensor]) -> bool:
        return "conv1_scene.weight" in state and "conv4.weight" in state

    @classmethod
    def official_payload(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """``{"model": state}``; only a ResNet-50 student has ModelSpatial's keys (warns when sizes differ)."""
        if config.get("backbone") != "resnet50":
            raise ValueError(f"VAT's ModelSpatial is a ResNet-50 network; the {config.get('backbone')!r} stand-in "
                             "has other state-dict keys")
        size = vat_size_from_state_dict(state)
        if size != OFFICIAL_VAT:
            log.warning("VAT sizes %s differ from ModelSpatial's %s: the keys are VAT's, the shapes are not "
                        "(VAT's scripts will not load it; gcdr's load_student will)", size, OFFICIAL_VAT)
        return {"model": dict(state)}

    @classmethod
    def from_official(cls, state: Mapping[str, torch.Tensor], backbone: str | Path | None = None) -> VATStudent:
        """Sized by :func:`vat_size_from_state_dict`; every key used, every model key present but BN counters."""
        student = cls(VATModelConfig(**vat_size_from_state_dict(state), zero_init_output=False))
        result = student.model.load_state_dict(state, strict=False)  # a shape mismatch raises
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"official vat file: missing {missing}, unexpected {list(result.unexpected_keys)}")
        return student


class VATGCStudent(VATStudent):
    """VAT-GC (GCDR's ``baseline_gradcam`` teacher): :class:`VATSpatial` with the person's Grad-CAM map as an
    input of the attention layer (``gradcam_input``). The map comes from the batch (``prior_heatmap_64``,
    cropped / flipped with the image, and ``prior_valid``), filled by the Grad-CAM folders of
    :meth:`input_maps`; rows without a valid Grad-CAM get a zero map and carry no heatmap loss
    (:meth:`loss_rows`, as GCDR masks them).
    """

    name = "vat-gc"
    gradcam_input = True
    reads_input_maps = True

    def forward(self, batch: dict[str, torch.Tensor],
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        valid = batch["prior_valid"].bool()  # [B]
        gradcam = torch.where(valid[:, None, None], batch["prior_heatmap_64"].float(), 0.0)  # [B, 64, 64]
        return self.model(batch["scene"], batch["head_channel"], batch["face"], gradcam)

    @staticmethod
    def loss_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Only rows with a valid Grad-CAM carry a loss."""
        return batch["prior_valid"].bool()

    @classmethod
    def input_maps(cls, student: StudentConfig, *also: PseudoLabelFolder) -> PseudoLabelFolders:
        """The Grad-CAM folders of ``student.gradcam_folders`` plus ``also`` (refine: its source folder)."""
        from gcdr.errors import UserError

        folders = [PseudoLabelFolder(folder) for folder in student.gradcam_folders or []] + list(also)
        if not folders:
            raise UserError(f"student.model {cls.name!r} reads each person's Grad-CAM map: set "
                            "student.gradcam_folders=[<Grad-CAM folder of the train persons>,<... of the test persons>]")
        return PseudoLabelFolders(folders)

    # -- no official file: VAT-GC's attention layer does not fit VAT's ModelSpatial
    @classmethod
    def reads_official(cls, state: Mapping[str, torch.Tensor]) -> bool:
        return False

    @classmethod
    def official_payload(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        raise ValueError(f"the {cls.name} student has no official file format")

    @classmethod
    def from_official(cls, state: Mapping[str, torch.Tensor], backbone: str | Path | None = None) -> VATGCStudent:
        raise ValueError(f"the {cls.name} student has no official file format")
