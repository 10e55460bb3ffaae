"""The two config sections of stage 2: ``teacher:`` (make train-teacher) and ``refine:`` (make refine).

Defaults are the small CPU settings of ``configs/synthgaze.yaml``. The official GCDR teacher
(docs/official-code.md#u-net-sizes, docs/method.md#stage-2-diffusion-teacher) is::

    teacher:
      encoder: resnet50                  # VAT-compatible; initial_weights_for_spatial_training.pt loads
      encoder_width: null
      init_weights: initial_weights_for_spatial_training.pt
      unet_channels: 64
      channel_mult: [1, 2, 3, 4]         # 64 / 128 / 192 / 256 channels at 64 / 32 / 16 / 8 pixels
      attention_levels: [2, 3]
      attention_head_dim: null
      attention_heads: 4                 # official num_heads: 4 heads in every attention layer (48 / 64 wide)
      norm_groups: 32
      lr: 0.00005
      batch_size: 48
      epochs: 150                        # 150 / 150 / 100 for 5 / 10 / 20 % labels
    refine:
      T: 250                             # 200 for 5 % labels
      steps: 2
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gcdr.encoders import VAT_INPUT_SIZE
from gcdr.teacher.model import TeacherModelConfig


@dataclass
class TeacherConfig:
    """The ``teacher:`` section: the network (first block), the optimiser, mean teacher, validation."""

    # network (saved with the model; see TeacherModelConfig). Defaults: the CPU demo size
    # (0.19 + 0.28 GFLOP per person for encoder + one U-Net call, 0.9 M parameters).
    encoder: str = "resnet18"              # resnet50 = official VAT encoder; resnet18 = small stand-in
    encoder_width: int | None = 8          # resnet18 pathway width (None = VATEncoder's 32); null for resnet50
    input_size: int = VAT_INPUT_SIZE       # encoder input in pixels (VAT 224; 128 = a 3x cheaper CPU encoder)
    init_weights: str | None = None        # VAT state dict for the encoder (name + shape matching)
    unet_channels: int = 8                 # U-Net base width (official 64)
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])  # official [1, 2, 3, 4]
    layers_per_block: int = 2              # ResBlocks per level on the way down (official num_res_blocks 2)
    attention_levels: list[int] = field(default_factory=lambda: [3])  # official [2, 3]: 16x16 and 8x8
    attention_head_dim: int | None = 8     # channels per head (diffusers' rule); unused with attention_heads
    attention_heads: int | None = None     # heads per attention layer (GCDR num_heads, official 4)
    norm_groups: int = 4                   # GroupNorm groups (official 32)
    num_train_timesteps: int = 500
    beta_start: float = 2e-4
    beta_end: float = 4e-2
    scale: float = 2.0                     # heatmaps [0, 1] -> diffusion space [-scale, scale]

    # optimisation
    epochs: int = 30
    train_steps: int | None = None         # the budget in optimiser steps, the same at every label ratio
                                           # (the last epoch is cut short); None = ``epochs`` whole epochs
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    num_workers: int = 0
    cpu_threads: int | None = None         # torch threads on a CPU (None = torch's default; 1 on a shared box)
    seed: int = 0

    # mean teacher (docs/method.md#mean-teacher); on with mean_teacher: true (make train-teacher MEAN_TEACHER=1)
    mean_teacher: bool = False
    labeled_batch_size: int = 8            # labeled rows per batch; the rest of batch_size is unlabeled
    ema_decay: float = 0.99
    ema_ramp_every: int = 15               # decay = min(1 - 1/(floor(step / 15) + 1), ema_decay)
    consistency: str = "kl"                # kl | mse
    consistency_weight: float = 4000.0
    consistency_rampup_epochs: int = 5
    teacher_steps: int = 10                # DDIM steps of the EMA teacher's prediction

    # what the network learns (docs/method.md#direct-mapping): "diffusion" (GCDR: x0 from a noised map) or
    # "direct" (the ablation without diffusion: x0 from the person's Grad-CAM map in one step, ``prior`` = a
    # Grad-CAM folder holding the labeled persons, e.g. the gradcam folder of split train)
    objective: str = "diffusion"
    prior: str | None = None

    # validation: DDIM from pure noise, scored with gcdr.metrics.evaluate
    val_every: int = 10                    # epochs (0 = only after the last one)
    val_split: str = "test"                # test | none
    val_steps: int = 10
    val_max_persons: int = 100             # first N in-frame persons of the split (0 = all)
    eta: float = 1.0                       # DDIM eta (1 = stochastic, as GCDR)

    def __post_init__(self) -> None:
        if self.val_split is None:  # `--set teacher.val_split=none` parses as null
            self.val_split = "none"
        _check_choices("teacher", self, consistency=("kl", "mse"), val_split=("test", "none"),
                       objective=("diffusion", "direct"))
        if self.objective == "direct" and (self.mean_teacher or not self.prior):
            raise ValueError("teacher.objective=direct maps Grad-CAM maps to heatmaps: it needs teacher.prior (a "
                             "Grad-CAM folder holding the labeled persons) and no mean teacher")
        if self.train_steps is not None:
            _check_at_least("teacher", self, train_steps=1)
        _check_at_least("teacher", self, epochs=1, batch_size=1, num_train_timesteps=1, teacher_steps=1, val_steps=1,
                        labeled_batch_size=1, val_every=0, val_max_persons=0, lr=0.0, weight_decay=0.0, eta=0.0)
        if self.mean_teacher and not self.labeled_batch_size < self.batch_size:
            raise ValueError(f"teacher.labeled_batch_size ({self.labeled_batch_size}) must be smaller than "
                             f"teacher.batch_size ({self.batch_size}) with the mean teacher")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"teacher.beta_start < beta_end must lie in (0, 1), got {self.beta_start}, {self.beta_end}")

    def model_config(self) -> TeacherModelConfig:
        return TeacherModelConfig(
            encoder=self.encoder, encoder_width=self.encoder_width, input_size=self.input_size,
            unet_channels=self.unet_channels,
            channel_mult=tuple(self.channel_mult), layers_per_block=self.layers_per_block,
            attention_levels=tuple(self.attention_levels), attention_head_dim=self.attention_head_dim,
            attention_heads=self.attention_heads, norm_groups=self.norm_groups,
            num_train_timesteps=self.num_train_timesteps, beta_start=self.beta_start, beta_end=self.beta_end,
            scale=self.scale, objective=self.objective,
        )


@dataclass
class RefineConfig:
    """The ``refine:`` section (make refine T=250 STEPS=2 SAMPLES=1 METHOD=gcdr|none|argmax)."""

    method: str = "gcdr"                   # gcdr | none (raw Grad-CAM) | argmax | direct | student
    T: int = 250                           # denoise_steps N: start noise level (0 = input, 500 = pure noise)
    steps: int = 2                         # DDIM steps from T down to 0
    samples: int = 1                       # refinements averaged per person
    keep_draws: bool = False               # gcdr: also store every draw (parts/*.draws_64.npy) and each person's
                                           # draw_spread (gcdr.pseudolabels); needs samples >= 2
    batch_size: int = 64
    seed: int = 0
    eta: float = 1.0                       # DDIM eta
    semantics: str = "intended"            # intended | as_coded (see gcdr.teacher.diffusion)
    teacher: str | None = None             # model dir (save_pretrained); None = <teacher_dir>/model (gcdr, direct)
    student: str | None = None             # method student (self-training): a student trained on the labeled
                                           # persons (model/ dir or last.pt) predicts the split's persons
    split: str | None = None               # None = gradcam.split
    previews: int = 50                     # PNG overlays for the first N persons (-1 = all)
    num_workers: int = 0
    cpu_threads: int | None = None         # torch threads on a CPU (None = torch's default; 1 on a shared box)

    def __post_init__(self) -> None:
        if self.method is None:  # `--set refine.method=none` parses as null
            self.method = "none"
        _check_choices("refine", self, method=("gcdr", "none", "argmax", "direct", "student"),
                       semantics=("intended", "as_coded"))
        if self.method == "student" and not self.student:
            raise ValueError("refine.method=student (self-training) needs refine.student: the model folder of a "
                             "student trained on the labeled persons (make train-student PSEUDO=none)")
        _check_at_least("refine", self, T=0, steps=1, samples=1, batch_size=1, eta=0.0)
        if self.keep_draws and self.samples < 2:
            raise ValueError(f"refine.keep_draws=true keeps the draws of refine.samples, which is {self.samples}: "
                             "set refine.samples >= 2 (SAMPLES=) or refine.keep_draws=false")


def _check_choices(section: str, cfg, **allowed: tuple) -> None:
    for name, choices in allowed.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {getattr(cfg, name)!r}")


def _check_at_least(section: str, cfg, **lowest: float) -> None:
    for name, low in lowest.items():
        value = getattr(cfg, name)
        if value < low:
            raise ValueError(f"{section}.{name} must be >= {low}, got {value}")
