"""VAT spatio-temporal model (Chong et al., CVPR 2020, ``ModelSpatioTemporal``) as the ``vat-video`` student,
key-compatible with ``model_videoatttarget.pt`` (docs/official-code.md#vat-spatio-temporal-model).

It is the spatial model (:class:`gcdr.students.vat.VATSpatial`, same encoder and heads) with two changes:

- every residual block holds a second BatchNorm ``bn_ds`` applied after its shortcut projection (keys
  ``layerX_{scene,face}.N.bn_ds.*``, present in every block, used only where a projection exists);
- a 2-layer convolutional LSTM ``convlstm_scene`` (512 -> 512 channels, 3x3, dropout 0.5 between the layers)
  runs over time on the 512x7x7 heatmap encoding (after ``compress_bn2`` + ReLU), before the deconvolutions.

ResNet-50 size: 959 state entries, 99,277,242 parameters. ``model_gazefollow.pt`` (spatial) loads by name as a
start: ``bn_ds`` keeps its identity init (weight 1, bias 0, mean 0, var 1, and every BN runs in eval mode), so
only the ConvLSTM is new.

Time: a batch is a set of rows (frames) with ``clip_slot`` [N] (which clip of the batch a row belongs to) and
``clip_start`` [N] (the row is the first frame of its clip: that slot's state starts at zero). Within a batch
the rows of one slot are consecutive frames in order (gcdr.data.clips builds such chunks). The LSTM state of
every slot is kept on the module between calls and detached at the start of each call: successive chunks of
one clip batch continue the clips (truncated back-propagation through time, VAT's chunks of 3 frames). A batch
without those keys (any other caller, e.g. a per-image prediction) treats every row as a one-frame clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from gcdr.checkpoints import LoadReport, load_vat_weights
from gcdr.encoders import VAT_INPUT_SIZE, VATEncoder
from gcdr.heatmaps import HEATMAP_SIZE
from gcdr.students.student import Student
from gcdr.students.vat import VATSpatial, heatmap_mse_loss, vat_size_from_state_dict

if TYPE_CHECKING:
    from gcdr.students.config import StudentConfig

LSTM_KERNEL = 3
LSTM_DROPOUT = 0.5
VAT_LSTM_LAYERS = 2
DEFAULT_CHUNK_LENGTH = 3  # VAT: truncated back-propagation every 3 frames, also at evaluation
INOUT_LR_FACTOR = 5.0  # VAT trains fc_inout at 5 x the decoder's learning rate
# VAT's recipe trains these (and nothing else): the ConvLSTM and the deconvolution head at lr, fc_inout at 5 x lr
DECODER_PARTS = ("convlstm_scene", "deconv1", "deconv2", "deconv3", "conv4")
INOUT_PARTS = ("fc_inout",)


# -------------------------------------------------------------------------------------------- blocks

def _maybe_bn(bn: nn.BatchNorm2d, x: torch.Tensor, skip_single_row: bool) -> torch.Tensor:
    """VAT as coded skips these BatchNorms when the batch holds one row (``skip_single_row``)."""
    return x if skip_single_row and x.shape[0] == 1 else bn(x)


class _BlockWithShortcutBN:
    """Adds ``bn_ds`` (a BatchNorm on the shortcut projection's output) to a torchvision block."""

    skip_bn_for_single_row = False

    def _add_shortcut_bn(self, out_channels: int) -> None:
        self.bn_ds = nn.BatchNorm2d(out_channels)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is None:
            return x
        return _maybe_bn(self.bn_ds, self.downsample(x), self.skip_bn_for_single_row)


class TemporalBottleneck(_BlockWithShortcutBN, Bottleneck):
    """VAT's ``BottleneckConvLSTM``: a Bottleneck with ``bn_ds`` after the shortcut projection."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(inplanes, planes, stride, downsample)
        self._add_shortcut_bn(planes * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip_bn_for_single_row
        out = self.relu(_maybe_bn(self.bn1, self.conv1(x), skip))
        out = self.relu(_maybe_bn(self.bn2, self.conv2(out), skip))
        out = _maybe_bn(self.bn3, self.conv3(out), skip)
        return self.relu(out + self._shortcut(x))


class TemporalBasicBlock(_BlockWithShortcutBN, BasicBlock):
    """The resnet18 stand-in's block with the same extra ``bn_ds``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(inplanes, planes, stride, downsample)
        self._add_shortcut_bn(planes * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip_bn_for_single_row
        out = self.relu(_maybe_bn(self.bn1, self.conv1(x), skip))
        out = _maybe_bn(self.bn2, self.conv2(out), skip)
        return self.relu(out + self._shortcut(x))


_TEMPORAL_BLOCKS = {Bottleneck: TemporalBottleneck, BasicBlock: TemporalBasicBlock}


# ------------------------------------------------------------------------------------------ ConvLSTM

class ConvLSTM(nn.Module):
    """A stacked convolutional LSTM with the parameter names of ``torch.nn.LSTM`` (and of the ConvLSTM VAT uses):
    ``weight_ih_l{k}`` [4C, C_in, 3, 3], ``weight_hh_l{k}`` [4C, C, 3, 3], ``bias_ih_l{k}``, ``bias_hh_l{k}`` [4C].

    Gates in the order input, forget, cell, output; 'same' zero padding; dropout between layers in training
    mode; every parameter ~ U(-1/sqrt(C), 1/sqrt(C)) (VAT's init loop does not touch it).
    :meth:`step`: one time step for a batch of rows.
    """

    def __init__(self, in_channels: int, channels: int, num_layers: int = VAT_LSTM_LAYERS,
                 kernel_size: int = LSTM_KERNEL, dropout: float = LSTM_DROPOUT):
        super().__init__()
        self.channels, self.num_layers, self.dropout = channels, num_layers, dropout
        self.padding = kernel_size // 2
        for layer in range(num_layers):
            layer_in = in_channels if layer == 0 else channels
            self.register_parameter(f"weight_ih_l{layer}",
                                    nn.Parameter(torch.empty(4 * channels, layer_in, kernel_size, kernel_size)))
            self.register_parameter(f"weight_hh_l{layer}",
                                    nn.Parameter(torch.empty(4 * channels, channels, kernel_size, kernel_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * channels)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * channels)))
        bound = 1.0 / math.sqrt(channels)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def step(self, x: torch.Tensor, hidden: torch.Tensor,
             cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [R, C_in, h, w], hidden / cell [L, R, C, h, w] -> (output [R, C, h, w], hidden, cell)."""
        hiddens, cells = [], []
        for layer in range(self.num_layers):
            if layer > 0:
                x = F.dropout(x, self.dropout, training=self.training)
            gates = (F.conv2d(x, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}"),
                              padding=self.padding)
                     + F.conv2d(hidden[layer], getattr(self, f"weight_hh_l{layer}"),
                                getattr(self, f"bias_hh_l{layer}"), padding=self.padding))  # [R, 4C, h, w]
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=1)
            c = torch.sigmoid(forget_gate) * cell[layer] + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
            x = torch.sigmoid(out_gate) * torch.tanh(c)  # [R, C, h, w]
            hiddens.append(x)
            cells.append(c)
        return x, torch.stack(hiddens), torch.stack(cells)


# --------------------------------------------------------------------------------------------- model

class VATSpatioTemporal(VATSpatial):
    """VAT ``ModelSpatioTemporal``: :class:`VATSpatial` with ``bn_ds`` in every block and ``convlstm_scene``.

    forward(scene, head_channel, face, clip_slot=None, clip_start=None) -> (heatmap [N, 64, 64] raw,
    inout logit [N]); see the module docstring for the clip keys and the state kept between calls
    (:meth:`reset_state` drops it).
    ``skip_bn_for_single_row``: VAT as coded skips the residual blocks' and the deconvolutions' BatchNorms
    when a call holds a single row; off by default (with every BN in eval mode the skip only changes the
    output of lone frames).
    """

    def __init__(self, backbone: str = "resnet50", width: int | None = None, input_size: int = VAT_INPUT_SIZE,
                 zero_init_output: bool = False, lstm_layers: int = VAT_LSTM_LAYERS,
                 skip_bn_for_single_row: bool = False):
        super().__init__(backbone, width, input_size, zero_init_output)
        channels = self.compress_conv2.out_channels  # 512 for resnet50
        # attribute order = VAT's state-dict order: convlstm_scene between fc_inout and deconv1
        decoder = {name: self._modules.pop(name) for name in ("deconv1", "deconv_bn1", "deconv2", "deconv_bn2",
                                                              "deconv3", "deconv_bn3", "conv4")}
        self.convlstm_scene = ConvLSTM(channels, channels, lstm_layers)
        for name, module in decoder.items():
            self.add_module(name, module)
        self.skip_bn_for_single_row = skip_bn_for_single_row
        for module in self.modules():
            if isinstance(module, _BlockWithShortcutBN):
                module.skip_bn_for_single_row = skip_bn_for_single_row
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None  # (hidden, cell) [L, slots, C, h, w]

    @staticmethod
    def _pathway(block, width, widths, blocks, layer5_planes, layer5_blocks) -> list[nn.Sequential]:
        return VATEncoder._pathway(_TEMPORAL_BLOCKS[block], width, widths, blocks, layer5_planes, layer5_blocks)

    def reset_state(self) -> None:
        """Forget every clip's LSTM state."""
        self._state = None

    def forward(self, scene: torch.Tensor, head_channel: torch.Tensor, face: torch.Tensor,
                clip_slot: torch.Tensor | None = None,
                clip_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fused = VATEncoder.forward(self, scene, head_channel, face)  # [N, 2C, 7, 7]
        x = self.relu(self.compress_bn1_inout(self.compress_conv1_inout(fused)))
        x = self.relu(self.compress_bn2_inout(self.compress_conv2_inout(x)))  # [N, 1, 7, 7]
        inout_logit = self.fc_inout(x.flatten(1)).squeeze(1)  # [N]

        encoding = self.relu(self.compress_bn1(self.compress_conv1(fused)))
        encoding = self.relu(self.compress_bn2(self.compress_conv2(encoding)))  # [N, C/4, 7, 7]
        x = self._recur(encoding, clip_slot, clip_start)  # [N, C/4, 7, 7]
        skip = self.skip_bn_for_single_row
        x = self.relu(_maybe_bn(self.deconv_bn1, self.deconv1(x), skip))  # [N, C/8, 15, 15]
        x = self.relu(_maybe_bn(self.deconv_bn2, self.deconv2(x), skip))  # [N, C/16, 31, 31]
        x = self.relu(_maybe_bn(self.deconv_bn3, self.deconv3(x), skip))  # [N, 1, 64, 64]
        x = self.conv4(x)
        if x.shape[-1] != HEATMAP_SIZE:  # only for input_size != 224
            x = F.interpolate(x, size=(HEATMAP_SIZE, HEATMAP_SIZE), mode="bilinear", align_corners=False)
        return x.squeeze(1), inout_logit

    def _recur(self, encoding: torch.Tensor, clip_slot: torch.Tensor | None,
               clip_start: torch.Tensor | None) -> torch.Tensor:
        """The ConvLSTM over the rows of a chunk: the k-th row of a slot is that clip's k-th step here."""
        rows = len(encoding)
        if clip_slot is None:  # every row a one-frame clip
            clip_slot = torch.arange(rows, device=encoding.device)
            clip_start = torch.ones(rows, dtype=torch.bool, device=encoding.device)
        clip_slot = clip_slot.long()
        clip_start = clip_start.bool() if clip_start is not None else torch.zeros_like(clip_slot, dtype=torch.bool)
        state_shape = (self.convlstm_scene.num_layers, int(clip_slot.max()) + 1, *encoding.shape[1:])
        hidden, cell = self._carried_state(state_shape, encoding)
        steps, seen = [], {}  # steps[i]: how many earlier rows of the batch belong to row i's clip
        for slot in clip_slot.tolist():
            steps.append(seen.get(slot, 0))
            seen[slot] = steps[-1] + 1
        output = torch.empty_like(encoding)
        for step in range(max(steps, default=-1) + 1):
            rows_now = torch.tensor([i for i, k in enumerate(steps) if k == step], device=encoding.device)
            slot_now = clip_slot[rows_now]
            fresh = clip_start[rows_now].view(1, -1, 1, 1, 1)
            h = torch.where(fresh, 0.0, hidden[:, slot_now])
            c = torch.where(fresh, 0.0, cell[:, slot_now])
            out, h, c = self.convlstm_scene.step(encoding[rows_now], h, c)
            output = output.index_copy(0, rows_now, out.to(output.dtype))
            hidden = hidden.index_copy(1, slot_now, h.to(hidden.dtype))
            cell = cell.index_copy(1, slot_now, c.to(cell.dtype))
        self._state = (hidden.detach(), cell.detach())  # the next call continues from here, without a gradient
        return output

    def _carried_state(self, shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (detached) state of earlier calls, cut or zero-padded to ``shape``'s slots; zeros without one."""
        zeros = like.new_zeros(shape)
        if self._state is None or self._state[0].shape[2:] != shape[2:] or self._state[0].device != like.device:
            return zeros, zeros.clone()
        carried = []
        for tensor in self._state:
            tensor = tensor.to(like.dtype)
            kept = min(tensor.shape[1], shape[1])
            padded = zeros.clone()
            padded[:, :kept] = tensor[:, :kept]
            carried.append(padded)
        return carried[0], carried[1]


def vat_video_size_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The :class:`VATSpatioTemporal` size of a ``ModelSpatioTemporal`` state dict (backbone, width,
    input_size as :func:`gcdr.students.vat.vat_size_from_state_dict`, plus the LSTM's layer count)."""
    layers = sum(1 for key in state if key.startswith("convlstm_scene.weight_ih_l"))
    if not layers:
        raise ValueError("not a VAT ModelSpatioTemporal state dict: no convlstm_scene.weight_ih_l0")
    return {**vat_size_from_state_dict(state), "lstm_layers": layers}


# ------------------------------------------------------------------------------------------- student

@dataclass
class VATVideoModelConfig:
    """What rebuilds a ``vat-video`` student (``config.json``): the :class:`VATSpatioTemporal` arguments, and
    which parts its recipe trains (``decoder``: VAT's, the ConvLSTM and deconvolutions + fc_inout; ``all``)."""

    backbone: str = "resnet50"
    width: int | None = None
    input_size: int = VAT_INPUT_SIZE
    zero_init_output: bool = False
    lstm_layers: int = VAT_LSTM_LAYERS
    skip_bn_for_single_row: bool = False
    trained: str = "decoder"


class VATVideoStudent(Student):
    """VAT's spatio-temporal model as a clip student: trained on chunks of clips (gcdr.data.clips), every
    BatchNorm in eval mode, MSE x ``amp_factor`` on its raw heatmap (+ the in/out BCE of ``inout_loss_weight``).
    The whole state (959 entries at ResNet-50 size) is saved; ``trained: decoder`` freezes the rest."""

    name = "vat-video"
    config_class = VATVideoModelConfig
    style = "vat"
    protocol = "vat"
    lr_schedule = "constant"  # VAT: Adam without a schedule
    lr_field = "lr"
    inout_is_logit = True

    def __init__(self, config: VATVideoModelConfig):
        super().__init__(config)
        if config.trained not in ("decoder", "all"):
            raise ValueError(f"vat-video trained must be 'decoder' or 'all', got {config.trained!r}")
        self.model = VATSpatioTemporal(config.backbone, width=config.width, input_size=config.input_size,
                                       zero_init_output=config.zero_init_output, lstm_layers=config.lstm_layers,
                                       skip_bn_for_single_row=config.skip_bn_for_single_row)
        if config.trained == "decoder":
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(name.split(".")[0] in DECODER_PARTS + INOUT_PARTS)

    @classmethod
    def config_from(cls, student: StudentConfig, out_root: str | Path | None = None) -> VATVideoModelConfig:
        return VATVideoModelConfig(backbone=student.backbone, width=student.vat_width,
                                   input_size=student.vat_input_size, zero_init_output=student.vat_zero_init_output,
                                   lstm_layers=student.vat_lstm_layers,
                                   skip_bn_for_single_row=student.vat_skip_bn_for_single_row,
                                   trained=student.vat_video_trained)

    def train(self, mode: bool = True) -> VATVideoStudent:
        """VAT's recipe keeps every BatchNorm in eval mode (running statistics, no updates) while training."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor],
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw heatmap [N, 64, 64], in/out logit [N]) of a chunk (``clip_slot`` / ``clip_start`` keys) or of
        independent frames; no sigmoid, so ``return_logits`` changes nothing."""
        return self.model(batch["scene"], batch["head_channel"], batch["face"], batch.get("clip_slot"),
                          batch.get("clip_start"))

    @staticmethod
    def heatmap_loss(heatmap_logits: torch.Tensor, target_64: torch.Tensor, mask: torch.Tensor,
                     weight: torch.Tensor, cfg: StudentConfig) -> torch.Tensor:
        return heatmap_mse_loss(heatmap_logits, target_64, mask, weight, amp_factor=cfg.amp_factor)

    def parameter_groups(self, cfg: StudentConfig) -> list[dict[str, Any]]:
        """VAT's groups: the trained in/out parameters (fc_inout) at ``inout_lr`` (default 5 x ``lr``), the rest
        of what is trained at ``lr``."""
        inout, rest = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (inout if "inout" in name else rest).append(parameter)
        inout_lr = cfg.inout_lr if cfg.inout_lr is not None else cfg.learning_rate * INOUT_LR_FACTOR
        return [{"params": rest, "lr": cfg.learning_rate}, {"params": inout, "lr": inout_lr}]

    def own_batches(self, dataset, batch_size: int, train: bool = False,
                    cfg: StudentConfig | None = None) -> tuple[Any, Any]:
        """Chunks of clips (gcdr.data.clips): ``batch_size`` tracks at a time, ``cfg.chunk_length`` frames per
        chunk (VAT: 3); training windows of at most ``cfg.clip_length`` frames (VAT: 50) with one augmentation
        per window, evaluation on whole tracks."""
        from gcdr.data.clips import ClipChunkSampler, ClipDataset

        chunk_length = cfg.chunk_length if cfg is not None else DEFAULT_CHUNK_LENGTH
        clip_length = cfg.clip_length if cfg is not None and train else None
        clips = ClipDataset(dataset, augmented=train)
        sampler = ClipChunkSampler(clips.tracks, batch_size, chunk_length, clip_length, shuffle=train,
                                   seed=cfg.seed if cfg is not None else 0)
        return clips, sampler

    def load_init_weights(self, path: str | Path) -> LoadReport:
        """VAT's files by name + shape: ``initial_weights_for_temporal_training.pt`` / ``model_videoatttarget.pt``
        fill everything, ``model_gazefollow.pt`` everything but ``bn_ds`` and the ConvLSTM."""
        return load_vat_weights(self.model, path)

    # -- VAT's own files (``{"model": ModelSpatioTemporal state}``)
    @classmethod
    def reads_official(cls, state: Mapping[str, torch.Tensor]) -> bool:
        return "conv1_scene.weight" in state and "convlstm_scene.weight_ih_l0" in state

    @classmethod
    def official_payload(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        if config.get("backbone") != "resnet50":
            raise ValueError(f"VAT's ModelSpatioTemporal is a ResNet-50 network; the {config.get('backbone')!r} "
                             "stand-in has other state-dict keys")
        return {"model": dict(state)}

    @classmethod
    def from_official(cls, state: Mapping[str, torch.Tensor], backbone: str | Path | None = None) -> VATVideoStudent:
        """Sized by :func:`vat_video_size_from_state_dict`; every key used, every model key present but BN counters."""
        student = cls(VATVideoModelConfig(**vat_video_size_from_state_dict(state)))
        result = student.model.load_state_dict(state, strict=False)  # a shape mismatch raises
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"official vat-video file: missing {missing}, unexpected {list(result.unexpected_keys)}")
        return student
