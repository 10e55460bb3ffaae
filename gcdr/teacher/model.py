"""The GCDR diffusion teacher: a VAT encoder, a context pyramid and a diffusers U-Net that predicts x0.

Layout (docs/official-code.md#gcdr-diffusion-teacher)::

    scene [B,3,224,224] + head channel [B,1,224,224], face [B,3,224,224]
      -> feat_extractor (VATEncoder)                    [B, C_enc, 7, 7]   (2048 for resnet50)
      -> compress_conv1 1x1 + compress_bn1 + ReLU        [B, ch[-1], 7, 7]  (256 official)
      -> context pyramid c3 = nearest 7 -> 8             [B, ch[3], 8, 8]
                         c2 = upsample_2 (ConvT k2 s2) + upsample2_bn + ReLU   [B, ch[2], 16, 16]
                         c1, c0 likewise                 [B, ch[1], 32, 32], [B, ch[0], 64, 64]
    noisy heatmap [B,1,64,64] in [0,1], timestep [B] -> unet (diffusers UNet2DModel) -> x0 [B,1,64,64]

with ch = unet_channels x channel_mult (official 64 x (1, 2, 3, 4) = 64/128/192/256).

How the context reaches the U-Net (the design choice): GCDR adds c_l inside EVERY ResBlock of level l,
right after the block's first convolution, together with the time embedding (docs/method.md#teacher-inputs-and-conditioning): the 8 ResBlocks on
the way down, the 2 of the middle block and the 12 on the way up. diffusers has no argument for a
spatial per-block conditioning, so ``GazeDiffusionTeacher`` registers a forward hook on the
``conv1`` of every ``ResnetBlock2D`` that adds the context map of that block's level (the hook is bound to
the level when the model is built; channel counts are checked then). This is exactly the official
injection point (``conv1(x) + c_l + temb`` = ``conv1(x) + temb + c_l``), keeps the stock
``UNet2DModel`` (its mid block has the official ResBlock-Attention-ResBlock layout; UNet2DConditionModel's
attention-free ``UNetMidBlock2D`` does not) and adds no parameters: with the official sizes the teacher
has 79,230,914 parameters, the count of ``GF_Diffusion_Model_new``. The ControlNet route
(``down_block_additional_residuals`` of UNet2DConditionModel) was rejected because those residuals are
only added to the skip connections after the whole down path ran, so the down path and the middle block
would never see the person, and it needs extra zero-initialised projections.
Consequence: call the U-Net only through :meth:`GazeDiffusionTeacher.denoise` / ``forward`` (a bare ``teacher.unet``
call raises, it has no context), and the hooks are not safe for two concurrent forwards of one module
from two threads.

Attention heads: GCDR's ``UNetModel`` fixes the NUMBER of heads (``num_heads`` 4, no fixed head width), so
every attention layer has 4 heads: 48 channels each at the 192-channel level, 64 at the 256-channel level
and in the middle block. diffusers' ``UNet2DModel`` instead fixes the head WIDTH (``attention_head_dim``,
one value for all levels), which with 64 gives 3 heads at 192 channels. ``attention_heads`` (set by
``TeacherModelConfig.official()`` and configs/gazefollow.yaml) reproduces GCDR: the U-Net is built with one
full-width head per layer and every attention layer is then switched to that many heads (the q/k/v/out
projections are ``channels x channels`` either way, so the parameters are the same; only the split of the
dot products changes). Left at None (the demo configs), ``attention_head_dim`` decides as before. GCDR's
"legacy" head order (heads split before q/k/v inside one 1-D conv) is a permutation of the same weights.
The zero initialisation of each ResBlock's last conv, each attention output projection and the output
conv is reproduced.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from safetensors.torch import save_file
from torch import nn

from gcdr.atomic import atomic_path, write_json_atomic
from gcdr.checkpoints import LoadReport, load_vat_weights, read_model_dir, weights_do_not_fit
from gcdr.encoders import VAT_INPUT_SIZE, VATEncoder

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_CLASS = "GazeDiffusionTeacher"


@dataclass
class TeacherModelConfig:
    """Everything needed to rebuild a teacher (saved as config.json next to its weights).

    encoder:            VATEncoder backbone, "resnet50" (official, 2048-channel fused feature) or "resnet18".
    encoder_width:      resnet18 pathway width (None = VATEncoder's default 32); must be None for resnet50.
    input_size:         the encoder's square input in pixels (VAT's 224; the 224-px scene, head channel and face
                        are area-resized to it, a smaller one is a cheaper CPU teacher with a coarser context grid).
    Defaults: the CPU demo size (0.9 M parameters); ``official()`` is GCDR's (79.23 M).
    unet_channels:      U-Net base width; level l has unet_channels * channel_mult[l] channels.
    channel_mult:       one entry per level; level l works at heatmap_size / 2**l pixels.
    layers_per_block:   ResBlocks per level on the way down (the way up has one more).
    attention_levels:   levels with self-attention after each ResBlock (the middle block always has one).
    attention_head_dim: channels per attention head (diffusers' rule: heads = level channels // it; None =
                        one head per layer). Ignored when ``attention_heads`` is set.
    attention_heads:    heads per attention layer at every level, GCDR's ``num_heads`` (official 4: 48-channel
                        heads at 192 channels, 64 at 256); None = heads from ``attention_head_dim``.
    norm_groups:        GroupNorm groups (must divide every level's width).
    num_train_timesteps, beta_start, beta_end: linear beta schedule (GCDR: 500, 2e-4, 4e-2).
    scale:              heatmaps in [0, 1] map to [-scale, scale] in the diffusion space (GCDR: 2).
    objective:          "diffusion" (GCDR) or "direct" (trained to map a Grad-CAM map to the heatmap in one
                        step at timestep 0; the no-diffusion ablation). Refine checks it fits the method.
    """

    encoder: str = "resnet18"
    encoder_width: int | None = 8
    input_size: int = VAT_INPUT_SIZE  # absent from configs saved before it existed: 224, as then
    unet_channels: int = 8
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    layers_per_block: int = 2
    attention_levels: tuple[int, ...] = (3,)
    attention_head_dim: int | None = 8
    norm_groups: int = 4
    heatmap_size: int = 64
    num_train_timesteps: int = 500
    beta_start: float = 2e-4
    beta_end: float = 4e-2
    scale: float = 2.0
    attention_heads: int | None = None  # absent from configs saved before it existed: None, as then
    objective: str = "diffusion"  # what it was trained for: "diffusion" (x0 from a noised map) | "direct"

    def __post_init__(self) -> None:
        if self.encoder == "resnet50" and self.encoder_width is not None:
            raise ValueError("encoder resnet50 is VAT's network with its own widths: set encoder_width to null "
                             f"(got {self.encoder_width}; encoder_width only sizes the resnet18 stand-in)")
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_levels = tuple(int(level) for level in self.attention_levels)
        if self.heatmap_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"heatmap_size {self.heatmap_size} is not divisible by 2**(levels-1)")
        for width in self.level_channels:
            if width % self.norm_groups:
                raise ValueError(f"norm_groups {self.norm_groups} does not divide level width {width}")
        if self.attention_heads is not None:
            self.attention_heads = int(self.attention_heads)
            for width in self.attention_channels:
                if self.attention_heads < 1 or width % self.attention_heads:
                    raise ValueError(f"attention_heads {self.attention_heads} does not divide attention "
                                     f"width {width}")

    @classmethod
    def official(cls) -> TeacherModelConfig:
        """The GCDR configuration (79.23 M parameters, docs/official-code.md#u-net-sizes)."""
        return cls(encoder="resnet50", encoder_width=None, unet_channels=64, channel_mult=(1, 2, 3, 4),
                   attention_levels=(2, 3), attention_head_dim=None, attention_heads=4, norm_groups=32)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.unet_channels * m for m in self.channel_mult)

    @property
    def attention_channels(self) -> tuple[int, ...]:
        """Widths of the attention layers: the attention levels' and the middle block's (the last level)."""
        channels = self.level_channels
        return tuple(sorted({channels[level] for level in self.attention_levels} | {channels[-1]}))

    @property
    def level_sizes(self) -> tuple[int, ...]:
        return tuple(self.heatmap_size // 2**level for level in range(len(self.channel_mult)))


def _build_unet(config: TeacherModelConfig) -> UNet2DModel:
    levels = range(len(config.channel_mult))
    down = tuple("AttnDownBlock2D" if level in config.attention_levels else "DownBlock2D" for level in levels)
    up = tuple("AttnUpBlock2D" if level in config.attention_levels else "UpBlock2D" for level in reversed(levels))
    unet = UNet2DModel(
        sample_size=config.heatmap_size, in_channels=1, out_channels=1,
        block_out_channels=config.level_channels, down_block_types=down, up_block_types=up,
        layers_per_block=config.layers_per_block,
        # fixed head count: full-width single-head layers (q/k/v/out channels x channels), split below
        attention_head_dim=config.attention_head_dim if config.attention_heads is None else None,
        norm_num_groups=config.norm_groups, flip_sin_to_cos=True, freq_shift=0,  # GCDR's [cos | sin] embedding
        downsample_type="conv", upsample_type="conv", dropout=0.0,
    )
    if config.attention_heads is not None:
        _set_attention_heads(unet, config.attention_heads)
    # GCDR zero-initialises each ResBlock's last conv, each attention output and the output conv
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            nn.init.zeros_(module.conv2.weight)
            nn.init.zeros_(module.conv2.bias)
        elif isinstance(module, Attention):
            nn.init.zeros_(module.to_out[0].weight)
            nn.init.zeros_(module.to_out[0].bias)
    nn.init.zeros_(unet.conv_out.weight)
    nn.init.zeros_(unet.conv_out.bias)
    return unet


def _set_attention_heads(unet: UNet2DModel, heads: int) -> None:
    """Give every attention layer ``heads`` heads of width channels / heads (GCDR's fixed ``num_heads``).

    The layers' projections are channels x channels whatever the split, so only the attributes the attention
    processors read change: ``heads`` (query/key/value are viewed as [B, heads, L, channels / heads]),
    ``scale`` (1 / sqrt(head width), used by the non-SDPA processors; SDPA derives it from the head width)
    and ``sliceable_head_dim`` (attention slicing).
    """
    for module in unet.modules():
        if isinstance(module, Attention):
            if module.inner_dim % heads:
                raise ValueError(f"{heads} heads do not divide an attention layer of {module.inner_dim} "
                                 "channels")
            module.heads = heads
            module.sliceable_head_dim = heads
            if module.scale_qk:
                module.scale = (module.inner_dim // heads) ** -0.5


def _resblock_levels(unet: UNet2DModel) -> list[tuple[ResnetBlock2D, int]]:
    """Every ResBlock of the U-Net with the pyramid level whose context it receives."""
    n_levels = len(unet.down_blocks)
    blocks = [(resnet, level) for level, block in enumerate(unet.down_blocks) for resnet in block.resnets]
    blocks += [(resnet, n_levels - 1) for resnet in unet.mid_block.resnets]
    blocks += [(resnet, n_levels - 1 - i) for i, block in enumerate(unet.up_blocks) for resnet in block.resnets]
    return blocks


class _ContextSlot:
    """The context pyramid of the forward pass in flight; read by the ResBlock hooks."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] | None = None

    def add(self, level: int, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.maps is None:
            raise RuntimeError("the teacher's U-Net needs its context: call GazeDiffusionTeacher.denoise")
        return output + self.maps[level]  # conv1(x) [B, C_l, S_l, S_l] + c_l


class GazeDiffusionTeacher(nn.Module):
    """GCDR's conditional diffusion model: (scene, head, face) -> context; (x_t, t, context) -> x0.

    ``encode(scene, head_channel, face)`` -> context pyramid [c0 [B,ch0,64,64], ..., c3 [B,ch3,8,8]];
    ``denoise(noisy_heatmap [B,1,64,64] in [0,1], timesteps [B] long (0-based noise index), context)``
    -> predicted clean heatmap x0 [B,1,64,64] in [0,1] units (no output activation);
    ``forward(noisy_heatmap, timesteps, scene, head_channel, face)`` = both in one call.
    Top-level state-dict keys follow GCDR: ``feat_extractor.*`` (VAT key names), ``compress_conv1``,
    ``compress_bn1``, ``upsample_{2,1,0}``, ``upsample{2,1,0}_bn``; the U-Net lives under ``unet.*``
    (diffusers key names, not GCDR's ``diffusion_model.*``).
    """

    def __init__(self, config: TeacherModelConfig | None = None):
        super().__init__()
        self.config = config or TeacherModelConfig()
        channels = self.config.level_channels
        self.feat_extractor = VATEncoder(self.config.encoder, width=self.config.encoder_width,
                                         input_size=self.config.input_size)
        self.compress_conv1 = nn.Conv2d(self.feat_extractor.out_channels, channels[-1], kernel_size=1, bias=False)
        self.compress_bn1 = nn.BatchNorm2d(channels[-1])
        for level in reversed(range(len(channels) - 1)):  # upsample_2, upsample_1, upsample_0 (official order)
            self.add_module(f"upsample_{level}", nn.ConvTranspose2d(channels[level + 1], channels[level], 2, 2))
            self.add_module(f"upsample{level}_bn", nn.BatchNorm2d(channels[level]))
        self.relu = nn.ReLU(inplace=True)
        self.unet = _build_unet(self.config)

        self._context = _ContextSlot()
        for resnet, level in _resblock_levels(self.unet):
            if resnet.conv1.out_channels != channels[level]:
                raise AssertionError(f"ResBlock width {resnet.conv1.out_channels} != level {level} context "
                                     f"{channels[level]}")
            resnet.conv1.register_forward_hook(partial(self._context.add, level))

    # -------------------------------------------------------------------------------------- forward
    def encode(self, scene: torch.Tensor, head_channel: torch.Tensor, face: torch.Tensor) -> list[torch.Tensor]:
        """The context pyramid, index = U-Net level: [[B, ch0, 64, 64], [B, ch1, 32, 32], ...]."""
        fused = self.feat_extractor(scene, head_channel, face)  # [B, C_enc, 7, 7]
        top = self.relu(self.compress_bn1(self.compress_conv1(fused)))  # [B, ch[-1], 7, 7]
        top_size = self.config.level_sizes[-1]
        pyramid = [F.interpolate(top, size=(top_size, top_size), mode="nearest")]  # [B, ch[-1], 8, 8]
        for level in reversed(range(len(self.config.channel_mult) - 1)):
            upsample, norm = getattr(self, f"upsample_{level}"), getattr(self, f"upsample{level}_bn")
            pyramid.insert(0, self.relu(norm(upsample(pyramid[0]))))  # [B, ch[l], 2 S, 2 S]
        return pyramid

    def forward(self, noisy_heatmap: torch.Tensor, timesteps: torch.Tensor, scene: torch.Tensor,
                head_channel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """Encode the person and denoise in one call (training; DDP needs the whole graph in ``forward``).

        noisy_heatmap: [B, 1, 64, 64] network input in [0, 1]; timesteps: [B] long. Returns x0 [B, 1, 64, 64].
        """
        return self.denoise(noisy_heatmap, timesteps, self.encode(scene, head_channel, face))

    def denoise(self, noisy_heatmap: torch.Tensor, timesteps: torch.Tensor,
                context: list[torch.Tensor]) -> torch.Tensor:
        """x0 prediction [B, 1, 64, 64] for the network input [B, 1, 64, 64] (clamped, mapped to [0, 1]),
        with a context pyramid from :meth:`encode` (sampling encodes once and denoises several times)."""
        if len(context) != len(self.config.channel_mult):
            raise ValueError(f"context has {len(context)} levels, the U-Net {len(self.config.channel_mult)}")
        self._context.maps = context
        try:
            return self.unet(noisy_heatmap, timesteps).sample  # [B, 1, 64, 64]
        finally:
            self._context.maps = None

    @staticmethod
    def repeat_context(context: list[torch.Tensor], times: int) -> list[torch.Tensor]:
        """Context for ``times`` draws per person: [B, ...] -> [times * B, ...] (draw-major)."""
        return [c.repeat(times, 1, 1, 1) for c in context]

    # --------------------------------------------------------------------------------------- weights
    def load_encoder_weights(self, path_or_state_dict: str | Path | Mapping[str, torch.Tensor]) -> LoadReport:
        """Initialise ``feat_extractor`` from a VAT state dict (name + shape matching, as GCDR).

        ``missing`` of the report lists encoder keys that were not in the file (empty for the official
        ``initial_weights_for_spatial_training.pt`` with encoder resnet50).
        """
        report = load_vat_weights(self, path_or_state_dict, prefix="feat_extractor.")
        if report.missing:
            log.warning("encoder keys not initialised from the VAT weights: %d, e.g. %s", len(report.missing),
                        report.missing[:3])
        return report

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (parameters + BatchNorm statistics) atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        write_json_atomic(directory / CONFIG_FILE, {"model_class": MODEL_CLASS, **dataclasses.asdict(self.config)})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> GazeDiffusionTeacher:
        """Rebuild a teacher written by :meth:`save_pretrained`; errors name the directory."""
        hint = "delete the folder and rerun train-teacher (or pass --restart)"
        values, state, config_path = read_model_dir(directory, "teacher", hint, CONFIG_FILE, WEIGHTS_FILE,
                                                    map_location)
        if not isinstance(values, dict) or values.pop("model_class", MODEL_CLASS) != MODEL_CLASS:
            raise ValueError(f"{config_path} does not describe a {MODEL_CLASS}")
        model = cls(TeacherModelConfig(**values))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise weights_do_not_fit(config_path, error, hint) from error
        return model

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: encoder, context (compress + pyramid), unet, total."""
        encoder = sum(p.numel() for p in self.feat_extractor.parameters())
        unet = sum(p.numel() for p in self.unet.parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"encoder": encoder, "context": total - encoder - unet, "unet": unet, "total": total}
