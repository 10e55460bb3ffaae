"""Gaze-LLE (Ryan et al., CVPR 2025): a frozen DINOv2 and a small gaze decoder, key-compatible with the
official decoder checkpoints (docs/official-code.md#gaze-lle).

    image [B, 3, 448, 448] -> frozen DINOv2 patch tokens [B, D, 32, 32]
      -> linear 1x1 (D -> 256) + fixed 2-D sinusoidal pos_embed
      -> repeated per person; head_token added on the person's head-box cells (32x32 mask)
      -> (in/out token) + 3 timm Blocks (256, 8 heads)
      -> ConvTranspose k2 s2 (32 -> 64) -> Conv 1x1 -> sigmoid  => heatmap [P, 64, 64] in [0, 1]
      -> in/out token -> MLP -> sigmoid                        => in/out probability [P]

The backbone is a transformers ``Dinov2Model`` (hub id such as ``facebook/dinov2-base`` or a local
directory); patch tokens are taken after the final layernorm without CLS / register tokens, as
``x_norm_patchtokens`` of the torch.hub model. (transformers interpolates the position embeddings of a
518-px model to 448 px with bicubic ``size=`` interpolation, the hub model with a scale factor; the
features differ slightly, so official decoder weights run on near-identical but not bit-identical
features.) Checkpoints hold everything except ``backbone.*``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from gcdr.heatmaps import HEATMAP_SIZE, head_box_grid_mask
from gcdr.students.student import Student
from gcdr.students.vat import LoadReport, masked_row_mean, read_state_dict

if TYPE_CHECKING:
    from gcdr.students.config import StudentConfig

log = logging.getLogger(__name__)

GAZELLE_INPUT_SIZE = 448
OFFICIAL_NUM_HEADS = 8  # gazelle's GazeLLE hard-codes Block(num_heads=8); no shape in a state dict tells
OFFICIAL_GAZELLE = {"dim": 256, "num_layers": 3, "input_size": GAZELLE_INPUT_SIZE}  # released decoders
DEFAULT_GAZELLE_BACKBONE = "facebook/dinov2-base"  # ViT-B/14: gazelle_dinov2_vitb14*.pt
DINOV2_BY_WIDTH = {384: "facebook/dinov2-small", 768: "facebook/dinov2-base", 1024: "facebook/dinov2-large",
                   1536: "facebook/dinov2-giant"}
TINY_DINOV2 = "tiny-dinov2"  # gazelle_backbone value: a seeded random tiny DINOv2 saved under <out_root>/models
TINY_DINOV2_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          patch_size=14, image_size=224)
BoxNorm = Sequence[float] | None  # (xmin, ymin, xmax, ymax) divided by image width / height; None = no head


class Dinov2Backbone(nn.Module):
    """A frozen transformers DINOv2 returning its normalised patch tokens as a feature map.

    forward(images [B, 3, H, W] ImageNet-normalised) -> [B, D, H / p, W / p] (p = patch size, 14).
    Always in eval mode and without gradients; ``hidden_size`` = D, ``patch_size`` = p.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.hidden_size = int(model.config.hidden_size)
        self.patch_size = int(model.config.patch_size)
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> Dinov2Backbone:
        """Load a hub id (``facebook/dinov2-base``, ``-large``, ``-with-registers-*``) or a local directory."""
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(str(name_or_path)))

    def train(self, mode: bool = True) -> Dinov2Backbone:  # frozen: dropout / drop path stay off
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        tokens = self.model(pixel_values=images).last_hidden_state  # [B, 1 (+ registers) + rows*cols, D]
        patches = tokens[:, -rows * cols:]  # drop CLS / register tokens, which come first
        return patches.transpose(1, 2).reshape(images.shape[0], self.hidden_size, rows, cols)  # [B, D, r, c]


class BlipVisionBackbone(nn.Module):
    """The frozen vision tower of a BLIP model (e.g. the SynthGaze VQA stand-in of ``make synth-vqa``) as a
    Gaze-LLE backbone: Gaze-LLE's recipe is any frozen encoder pretrained elsewhere, and offline this one was
    pretrained on an independent draw without a gaze point.

    forward(images [B, 3, S, S] ImageNet-normalised, S = the tower's image size) -> [B, D, S / p, S / p]:
    the images are re-normalised with the model's own processor mean / std, patch tokens after the final
    layernorm, [CLS] dropped.
    """

    def __init__(self, vision_model: nn.Module, image_mean: Sequence[float], image_std: Sequence[float]):
        super().__init__()
        self.model = vision_model
        self.hidden_size = int(vision_model.config.hidden_size)
        self.patch_size = int(vision_model.config.patch_size)
        self.image_size = int(vision_model.config.image_size)
        from gcdr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        # x_blip = (x_imagenet * std_in + mean_in - mean_blip) / std_blip, per channel: one affine map
        std_in, mean_in = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        std_out, mean_out = torch.tensor(image_std, dtype=torch.float32), torch.tensor(image_mean, dtype=torch.float32)
        self.register_buffer("scale", (std_in / std_out).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - mean_out) / std_out).view(1, 3, 1, 1), persistent=False)
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BlipVisionBackbone:
        """The vision tower of a local BLIP directory (``BlipForQuestionAnswering`` + its processor config)."""
        from transformers import BlipForQuestionAnswering, BlipImageProcessor

        model = BlipForQuestionAnswering.from_pretrained(str(path))
        processor = BlipImageProcessor.from_pretrained(str(path))
        return cls(model.vision_model, processor.image_mean, processor.image_std)

    def train(self, mode: bool = True) -> BlipVisionBackbone:  # frozen
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"the BLIP vision backbone takes {self.image_size} px images, got "
                             f"{tuple(images.shape[-2:])}: set student.gazelle_input_size={self.image_size}")
        rows = cols = self.image_size // self.patch_size
        tokens = self.model(pixel_values=images * self.scale + self.shift).last_hidden_state  # [B, 1 + r*c, D]
        patches = tokens[:, 1:]
        return patches.transpose(1, 2).reshape(images.shape[0], self.hidden_size, rows, cols)  # [B, D, r, c]


def load_backbone(name_or_path: str | Path) -> nn.Module:
    """A frozen Gaze-LLE backbone: a local BLIP directory (its vision tower), else a DINOv2 hub id or directory."""
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        import json

        if json.loads(config_file.read_text()).get("model_type") == "blip":
            return BlipVisionBackbone.from_pretrained(name_or_path)
    return Dinov2Backbone.from_pretrained(name_or_path)


def sinusoidal_pos_embed_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine embedding [dim, rows, cols] (docs/official-code.md#gaze-lle-forward-pass, step 3).

    First half of the channels encodes the column x, second half the row y; within a half, channel
    2i = sin(pos * w_i), 2i+1 = cos(pos * w_i) with w_i = 10000^(-2i / (dim / 2)).
    """
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(0, half, 2, dtype=torch.float64) / half)  # [half / 2]

    def encode(positions: torch.Tensor) -> torch.Tensor:  # [n] -> [half, n]
        angles = omega[:, None] * positions[None, :].double()  # [half / 2, n]
        return torch.stack([angles.sin(), angles.cos()], dim=1).reshape(half, -1)  # interleave sin, cos

    x_code = encode(torch.arange(cols))[:, None, :].expand(half, rows, cols)  # constant along rows
    y_code = encode(torch.arange(rows))[:, :, None].expand(half, rows, cols)  # constant along columns
    return torch.cat([x_code, y_code], dim=0).float()  # [dim, rows, cols]


class GazeLLE(nn.Module):
    """Gaze-LLE with a frozen ``backbone`` (any module with ``hidden_size``, ``patch_size`` and
    forward(images) -> [B, D, g, g]); parameter names as the official ``GazeLLE``.

    forward(images [B, 3, S, S], head_boxes_norm: per image a list of normalised xyxy boxes)
        -> {"heatmap": list over images of [N_b, 64, 64] in [0, 1], "inout": list of [N_b] or None}.
    For training on one person per row use :meth:`decode` on backbone features directly.
    """

    def __init__(self, backbone: nn.Module, inout: bool = False, input_size: int = GAZELLE_INPUT_SIZE,
                 dim: int = 256, num_layers: int = 3, num_heads: int = 8, mlp_ratio: float = 4.0,
                 drop_path: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.input_size = input_size
        self.grid = input_size // backbone.patch_size  # 32 at 448 px with 14-px patches
        self.dim = dim
        self.has_inout = inout
        self.linear = nn.Conv2d(backbone.hidden_size, dim, kernel_size=1)
        self.register_buffer("pos_embed", sinusoidal_pos_embed_2d(dim, self.grid, self.grid))  # persistent
        self.head_token = nn.Embedding(1, dim)
        if inout:
            self.inout_token = nn.Embedding(1, dim)
        self.transformer = nn.Sequential(*[
            Block(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path)  # qkv_bias False
            for _ in range(num_layers)])
        self.heatmap_head = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
            nn.Conv2d(dim, 1, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )
        if inout:
            self.inout_head = nn.Sequential(
                nn.Linear(dim, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 1), nn.Sigmoid())

    # -- pieces ------------------------------------------------------------------------------------------

    def head_maps(self, head_boxes_norm: Sequence[BoxNorm]) -> torch.Tensor:
        """[P, g, g] head masks for P boxes (gcdr.heatmaps.head_box_grid_mask; None = zeros), on the model's
        device."""
        if not head_boxes_norm:
            return self.pos_embed.new_zeros(0, self.grid, self.grid)
        boxes = [(0.0, 0.0, 0.0, 0.0) if box is None else tuple(float(v) for v in box) for box in head_boxes_norm]
        for box in boxes:
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"a head box must be 4 finite numbers (xmin, ymin, xmax, ymax), got {box}")
        return head_box_grid_mask(boxes, self.grid).to(self.pos_embed.device)

    def decode(self, features: torch.Tensor, head_maps: torch.Tensor,
               return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The trainable part, one row per person.

        features: [P, D, g, g] backbone features (one row per person); head_maps: [P, g, g] 0/1.
        Returns (heatmap [P, 64, 64] in [0, 1], in/out probability [P] or None); with ``return_logits``
        both before their sigmoid (for BCE-with-logits losses).
        """
        x = self.linear(features) + self.pos_embed  # [P, 256, g, g]
        x = x + head_maps[:, None].to(x.dtype) * self.head_token.weight.view(1, -1, 1, 1)
        tokens = x.flatten(2).transpose(1, 2)  # [P, g*g, 256], row-major
        if self.has_inout:
            inout_token = self.inout_token.weight.expand(tokens.shape[0], 1, -1)  # [P, 1, 256]
            tokens = torch.cat([inout_token, tokens], dim=1)  # [P, 1 + g*g, 256]
        tokens = self.transformer(tokens)
        inout = None
        if self.has_inout:
            inout_logit = self.inout_head[:-1](tokens[:, 0]).squeeze(-1)  # [P]
            inout = inout_logit if return_logits else self.inout_head[-1](inout_logit)
            tokens = tokens[:, 1:]
        x = tokens.transpose(1, 2).reshape(-1, self.dim, self.grid, self.grid)  # [P, 256, g, g]
        logits = self.heatmap_head[1](self.heatmap_head[0](x))  # [P, 1, 2g, 2g]
        if logits.shape[-1] != HEATMAP_SIZE:  # a no-op at 448 px input (2g = 64)
            logits = F.interpolate(logits, size=(HEATMAP_SIZE, HEATMAP_SIZE), mode="bilinear", align_corners=False)
        logits = logits.squeeze(1)  # [P, 64, 64]
        return (logits if return_logits else self.heatmap_head[2](logits)), inout

    # -- the official interface -------------------------------------------------------------------------

    def forward(self, images: torch.Tensor,
                head_boxes_norm: Sequence[Sequence[BoxNorm]]) -> dict[str, list[torch.Tensor] | None]:
        """All persons of every image in one pass: the image is encoded once, its features repeated per box."""
        if len(head_boxes_norm) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(head_boxes_norm)} box lists")
        features = self.backbone(images)  # [B, D, g, g]
        counts = [len(boxes) for boxes in head_boxes_norm]
        repeated = torch.repeat_interleave(features, torch.tensor(counts, device=features.device), dim=0)
        flat_boxes = [box for boxes in head_boxes_norm for box in boxes]
        heatmaps, inout = self.decode(repeated, self.head_maps(flat_boxes))  # [P, 64, 64], [P]
        return {"heatmap": list(heatmaps.split(counts)),
                "inout": list(inout.split(counts)) if inout is not None else None}

    # -- checkpoints --------------------------------------------------------------------------------------

    def decoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without ``backbone.*`` (what official checkpoints hold)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone")}

    def load_decoder_state_dict(self, path_or_state_dict: str | Path | Mapping[str, torch.Tensor]) -> LoadReport:
        """Non-strict intersection load as the official loader: keys under ``backbone`` ignored on both sides,
        missing / unexpected keys reported (and logged). Accepts a path or a mapping (``{'state_dict':..}``
        / ``{'model':..}`` wrappers and ``module.`` prefixes are unwrapped). Shape mismatches raise."""
        state = {k: v for k, v in read_state_dict(path_or_state_dict).items() if not k.startswith("backbone")}
        own = self.decoder_state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        common = {k: state[k] for k in own if k in state}
        if missing or unexpected:
            log.info("Gaze-LLE load: missing %s, unexpected %s", missing, unexpected)
        self.load_state_dict(common, strict=False)  # raises on shape mismatch
        return LoadReport(sorted(common), missing, unexpected)


def decoder_size_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, int | bool | None]:
    """The decoder size that a Gaze-LLE decoder state dict (official or gcdr keys) was saved from.

    Returns {"dim", "num_layers", "inout", "feature_dim" (the backbone width D the ``linear`` layer takes),
    "grid" (token grid side from ``pos_embed``; None when the file has no ``pos_embed``)}. The number of
    attention heads is not recoverable from shapes (official files: :data:`OFFICIAL_NUM_HEADS`).
    """
    required = ("head_token.weight", "linear.weight")
    absent = [k for k in required if k not in state]
    if absent:
        raise ValueError(f"not a Gaze-LLE decoder state dict: no {absent}")
    layers = {int(k.split(".")[1]) for k in state if k.startswith("transformer.") and k.split(".")[1].isdigit()}
    if not layers:
        raise ValueError("not a Gaze-LLE decoder state dict: no transformer.<i>.* keys")
    return {"dim": int(state["head_token.weight"].shape[1]), "num_layers": max(layers) + 1,
            "inout": "inout_token.weight" in state, "feature_dim": int(state["linear.weight"].shape[1]),
            "grid": int(state["pos_embed"].shape[-1]) if "pos_embed" in state else None}


def build_gazelle(backbone: str | Path | nn.Module, inout: bool = False,
                  input_size: int = GAZELLE_INPUT_SIZE) -> GazeLLE:
    """A Gaze-LLE on a DINOv2 given as hub id, local directory or an already built backbone module."""
    if not isinstance(backbone, nn.Module):
        backbone = Dinov2Backbone.from_pretrained(backbone)
    return GazeLLE(backbone, inout=inout, input_size=input_size)


def gazelle_heatmap_bce_loss(heatmap_logits: torch.Tensor, target_64: torch.Tensor,
                             mask: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gaze-LLE's loss: BCE between sigmoid(heatmap) and the [0, 1] target, mean over pixels and rows.

    Computed from the logits (BCE-with-logits = BCELoss on the sigmoid output, numerically stable and
    safe under autocast). heatmap_logits, target_64: [P, 64, 64]; mask: [P] rows that count (None = all);
    weight: [P] per-row weight. Returns sum_mask(w_i * bce_i) / #mask.
    """
    per_sample = F.binary_cross_entropy_with_logits(
        heatmap_logits.float(), target_64.float(), reduction="none").flatten(1).mean(1)  # [P]
    return masked_row_mean(per_sample, mask, weight)


def count_learnable_parameters(model: GazeLLE) -> int:
    """Trainable parameters outside the backbone (2,826,752 for ViT-B without in/out)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith("backbone") and p.requires_grad)


# ---------------------------------------------------------------------------------------------- student

def ensure_tiny_dinov2(path: str | Path, seed: int = 0) -> Path:
    """Create (once) a random tiny DINOv2 from a Dinov2Config at ``path`` and return the directory.

    For offline demos only: the weights are untrained, the features are random projections of patches.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**TINY_DINOV2_CONFIG))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    try:
        tmp.rename(path)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "config.json").exists():
            raise
    log.info("wrote a random tiny DINOv2 (%s) to %s", TINY_DINOV2_CONFIG, path)
    return path


def configured_gazelle_backbone(cfg: dict[str, Any]) -> str:
    """``student.gazelle_backbone`` of a whole config as training resolves it (``vqa`` -> ``vqa.model``,
    ``tiny-dinov2`` -> ``<out_root>/models/tiny-dinov2``): the backbone of official Gaze-LLE files."""
    from gcdr import paths
    from gcdr.students.config import student_config

    name = student_config(cfg).gazelle_backbone
    return str(paths.out_root(cfg) / "models" / TINY_DINOV2) if name == TINY_DINOV2 else name


@dataclass
class GazeLLEModelConfig:
    """What rebuilds a Gaze-LLE student (``config.json``): its backbone (hub id or directory) and decoder size."""

    backbone: str = DEFAULT_GAZELLE_BACKBONE
    inout: bool = False
    input_size: int = GAZELLE_INPUT_SIZE
    dim: int = 256
    num_layers: int = 3
    num_heads: int = OFFICIAL_NUM_HEADS


class GazeLLEStudent(Student):
    """Gaze-LLE as a student (gcdr.students.student): :class:`GazeLLE` on its frozen backbone, BCE on the
    sigmoid heatmap; the backbone is left out of its state (official decoder keys). Batches may carry the
    backbone's features (``"features"`` [B, D, g, g], gcdr.students.feature_cache) instead of ``"scene"``."""

    name = "gazelle"
    config_class = GazeLLEModelConfig
    style = "gazelle"
    protocol = "gazelle"
    lr_schedule = "cosine"  # Gaze-LLE: cosine to 1e-7
    lr_field = "gazelle_lr"
    feature_cache = True

    def __init__(self, config: GazeLLEModelConfig, backbone: nn.Module | None = None):
        """``backbone``: the already loaded ``config.backbone`` (else it is loaded here)."""
        super().__init__(config)
        backbone = backbone if backbone is not None else load_backbone(config.backbone)
        self.model = GazeLLE(backbone, inout=config.inout, input_size=config.input_size,
                             dim=config.dim, num_layers=config.num_layers, num_heads=config.num_heads)

    @classmethod
    def config_from(cls, student: StudentConfig, out_root: str | Path | None = None) -> GazeLLEModelConfig:
        """``tiny-dinov2`` is created (once) under ``<out_root>/models`` and named by its path."""
        backbone = student.gazelle_backbone
        if backbone == TINY_DINOV2:
            backbone = str(ensure_tiny_dinov2(Path(out_root or ".") / "models" / TINY_DINOV2, seed=student.seed))
        return GazeLLEModelConfig(backbone=backbone, inout=student.gazelle_inout,
                                  input_size=student.gazelle_input_size, dim=student.gazelle_dim,
                                  num_layers=student.gazelle_layers, num_heads=student.gazelle_heads)

    @property
    def backbone(self) -> nn.Module:
        """The frozen backbone (what the feature cache runs once per image)."""
        return self.model.backbone

    def forward(self, batch: dict[str, torch.Tensor],
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(heatmap [B, 64, 64] in [0, 1] or its logits, in/out probability or logit [B] or None)."""
        features = batch["features"].float() if "features" in batch else self.model.backbone(batch["scene"])
        head_maps = head_box_grid_mask(batch["head_box_xyxy_norm"], self.model.grid)  # [B, g, g]
        return self.model.decode(features, head_maps, return_logits=return_logits)

    def predict_images(self, batch: dict[str, torch.Tensor],
                       image_paths: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The backbone runs once per image (features repeated per head, as the official multi-person forward)."""
        first = {p: i for i, p in reversed(list(enumerate(image_paths)))}  # image -> its first row
        unique_rows = sorted(set(first.values()))
        features = self.model.backbone(batch["scene"][unique_rows])  # [I, D, g, g]
        position = {row: k for k, row in enumerate(unique_rows)}
        features = features[[position[first[p]] for p in image_paths]]  # [B, D, g, g]
        head_maps = head_box_grid_mask(batch["head_box_xyxy_norm"], self.model.grid)
        return self.model.decode(features, head_maps)

    @staticmethod
    def heatmap_loss(heatmap_logits: torch.Tensor, target_64: torch.Tensor, mask: torch.Tensor,
                     weight: torch.Tensor, cfg: StudentConfig) -> torch.Tensor:
        return gazelle_heatmap_bce_loss(heatmap_logits, target_64, mask, weight)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.decoder_state_dict()

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        report = self.model.load_decoder_state_dict(state)
        if report.missing or report.unexpected:
            raise ValueError(f"missing {report.missing}, unexpected {report.unexpected}")

    def load_init_weights(self, path: str | Path) -> LoadReport:
        """A Gaze-LLE decoder checkpoint by non-strict intersection, as gazelle's loader."""
        return self.model.load_decoder_state_dict(path)

    # -- gazelle's own files (a plain decoder state dict, docs/official-code.md#gaze-lle-decoder-checkpoint-keys)
    @classmethod
    def reads_official(cls, state: Mapping[str, torch.Tensor]) -> bool:
        return "head_token.weight" in state and "linear.weight" in state

    @classmethod
    def official_payload(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The decoder state (``backbone.*`` dropped); refused for other than 8 heads (the files do not say)."""
        heads = config.get("num_heads", OFFICIAL_NUM_HEADS)
        if heads != OFFICIAL_NUM_HEADS:
            raise ValueError(f"gazelle's GazeLLE has {OFFICIAL_NUM_HEADS} attention heads and its files do not "
                             f"store the number; this student has {heads}: an official-format file would be misread")
        decoder = {k: v for k, v in state.items() if not k.startswith("backbone")}
        size = decoder_size_from_state_dict(decoder)
        actual = {"dim": size["dim"], "num_layers": size["num_layers"], "input_size": config.get("input_size")}
        if actual != OFFICIAL_GAZELLE or size["feature_dim"] not in (768, 1024):
            log.warning("Gaze-LLE sizes %s on a %d-wide backbone differ from the released models (%s on DINOv2 "
                        "ViT-B/L): gazelle reads the file into GazeLLE(dim=%d, num_layers=%d) on such a backbone",
                        actual, size["feature_dim"], OFFICIAL_GAZELLE, size["dim"], size["num_layers"])
        return decoder

    @classmethod
    def from_official(cls, state: Mapping[str, torch.Tensor],
                      backbone: str | Path | None = None) -> GazeLLEStudent:
        """Sized from the shapes, 8 heads, input size = token grid x the backbone's patch (448 for the released
        ViT-B/14 and ViT-L/14 files); ``backbone`` None = the DINOv2 of the file's feature width."""
        size = decoder_size_from_state_dict(state)
        name = str(backbone) if backbone is not None else DINOV2_BY_WIDTH.get(size["feature_dim"],
                                                                              DEFAULT_GAZELLE_BACKBONE)
        module = load_backbone(name)
        if module.hidden_size != size["feature_dim"]:
            hint = f" (e.g. {DINOV2_BY_WIDTH[size['feature_dim']]})" if size["feature_dim"] in DINOV2_BY_WIDTH else ""
            raise ValueError(f"the Gaze-LLE decoder takes {size['feature_dim']}-d features but backbone {name} gives "
                             f"{module.hidden_size}: set student.gazelle_backbone to a matching model{hint}")
        grid = size["grid"] or GAZELLE_INPUT_SIZE // module.patch_size
        config = GazeLLEModelConfig(backbone=name, inout=size["inout"], input_size=grid * module.patch_size,
                                    dim=size["dim"], num_layers=size["num_layers"], num_heads=OFFICIAL_NUM_HEADS)
        student = cls(config, backbone=module)
        report = student.model.load_decoder_state_dict(state)
        missing = [k for k in report.missing if k != "pos_embed"]
        if missing or report.unexpected:
            raise ValueError(f"official gazelle file: missing {missing}, unexpected {report.unexpected}")
        return student
