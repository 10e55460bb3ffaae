"""The ``student:`` config section: which student, its size, and how it is trained (``make train-student``).

The section is flat (``vat_*`` / ``gazelle_*`` fields size each student); each student class turns it into its own
model config (gcdr.students.student.Student.config_from).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

VQA_BACKBONE = "vqa"  # gazelle_backbone value: the frozen vision tower of the config's vqa.model


@dataclass
class StudentConfig:
    """The ``student:`` config section (``make train-student``).

    model:             vat | vat-video | vat-gc | gazelle (gcdr.students.registry). vat-gc = VAT with the person's
                       Grad-CAM map as an attention input (GCDR's baseline_gradcam teacher; trained with PSEUDO=none).
    gradcam_folders:   vat-gc: the Grad-CAM folders (make gradcam) holding the persons the student reads, e.g.
                       [<gradcam-train folder>, <gradcam-test folder>]; the first that holds a person answers.
    backbone:          VAT pathways: resnet50 (official, weights load) | resnet18 (small stand-in).
    vat_width:         resnet18 channel width (None = 32); resnet50 ignores it.
    vat_input_size:    scene / face / head-channel side for VAT; 224 = VAT. Smaller (e.g. 128) is a CPU-demo
                       option: inputs are resized to it, the feature grid shrinks and the heatmap is
                       resized to 64x64 (not VAT any more, but 3-4x cheaper).
    vat_zero_init_output: start VAT's last 1x1 conv at zero (see VATSpatial); for short runs from scratch.
    vat_lstm_layers:   vat-video: ConvLSTM layers (VAT: 2).
    vat_video_trained: vat-video: decoder (VAT's recipe: only the ConvLSTM, the deconvolutions and conv4 at lr,
                       fc_inout at 5 x lr) | all (every parameter at lr, the in/out branch at 5 x lr).
    vat_skip_bn_for_single_row: vat-video: skip the residual blocks' and deconvolutions' BatchNorms for a
                       one-row chunk, as VAT's code does (off: every BN always applied).
    clip_length, chunk_length: clip students (vat-video): training windows of at most clip_length frames per
                       track (VAT: 50), truncated back-propagation every chunk_length frames with the LSTM state
                       carried (detached) to the next chunk (VAT: 3); batch_size = clips per batch (VAT: 16), an
                       epoch = one window of every track (labeled_per_batch and steps_per_epoch do not apply).
    init_weights:      optional weights: VAT file (e.g. initial_weights_for_spatial_training.pt, name+shape
                       matching) or a Gaze-LLE decoder checkpoint (non-strict intersection).
    gazelle_backbone:  DINOv2 hub id (facebook/dinov2-base, -large), a local transformers directory, "vqa" =
                       the vision tower of ``vqa.model`` (resolved by the training stage), a local
                       BLIP directory (its frozen vision tower, e.g. the SynthGaze VQA stand-in: pretrained on an
                       independent draw without gaze points; gazelle_input_size = its image size), or
                       "tiny-dinov2" = a seeded random tiny DINOv2 built from a Dinov2Config and saved under
                       <out_root>/models/tiny-dinov2 (untrained features; tests only).
    gazelle_input_size: 448 = Gaze-LLE (32x32 tokens); 224 gives 16x16 tokens (CPU demo).
    gazelle_inout:     add the in/out token and head.
    gazelle_dim, gazelle_layers, gazelle_heads: decoder width / depth / heads; 256 / 3 / 8 = Gaze-LLE (and
                       its checkpoints). Smaller values are a CPU-demo option.
    feature_cache:     Gaze-LLE only: compute the frozen backbone's features once per image (no image
                       augmentation then: box jitter and, optionally, feature-map flips only).
    cache_flip:        with the cache, flip feature maps, boxes and targets with p = 0.5 (an approximation:
                       the features of a flipped image are not the flipped features).
    epochs, steps_per_epoch, max_steps: budget; steps_per_epoch None = one pass (mixed batches: N / B;
                       two-stream: #unlabeled / (B - labeled_per_batch)); max_steps stops early.
    batch_size:        persons per optimiser step and process.
    labeled_per_batch: None = batches drawn from all training persons alike; k = GCDR's two-stream batches,
                       k labeled + (batch_size - k) pseudo-labeled persons (GCDR: 20 of 80).
    lr, gazelle_lr:    Adam learning rate for VAT (2.5e-4) / Gaze-LLE (1e-3).
    lr_schedule:       auto (VAT: x0.2 at 60 % of the epochs as GCDR's [15] of 25; Gaze-LLE: cosine to 1e-7)
                       | multistep | cosine | constant.
    inout_lr:          learning rate of the parameters whose name contains "inout" (None = the student's own:
                       lr / gazelle_lr; vat-video: 5 x lr). Gaze-LLE on VideoAttentionTarget: 1e-2 with
                       gazelle_lr 1e-5, gazelle_inout true, init_weights = a GazeFollow checkpoint,
                       inout_loss_weight 1, 8 epochs, batch 60 (docs/official-code.md#gaze-lle-training-recipes).
    weight_decay:      Adam weight decay (0 in both recipes).
    pseudo_weight:     loss weight of pseudo-labeled rows (labeled rows: 1).
    pseudo_draws:      mean (the folder's map, the same every pass) | per_pass: a folder refined with
                       refine.keep_draws holds K draws per person; each pass (epoch) a pseudo-labeled person's
                       target is one of them, draw (o + epoch) mod K with o drawn once per person from (seed, item
                       index): every draw once in K epochs, the same choice on any machine
                       (docs/method.md#k-draws-and-confidence). A folder without draws is refused.
    pseudo_confidence: none | weight | filter, from the folder's draw_spread (refine.keep_draws) over the
                       pseudo-labeled persons of the training set: confidence = 1 - rank / (n - 1), the lowest
                       spread 1 (tied spreads share their mean rank). weight: each pseudo-labeled row's loss weight
                       is pseudo_weight x the confidence rescaled to mean 1 over those persons; filter: only the
                       pseudo_keep fraction with the lowest spread is trained on (ties by sample id). A folder
                       without draw_spread values is refused.
    pseudo_keep:       filter: the fraction of pseudo-labeled persons kept, in (0, 1] (rounded half up, at least 1).
    unlabeled_inout:   ignore (clean: every valid pseudo-label is a target) | gt (GCDR as coded: drop
                       unlabeled rows whose ground-truth in/out is 0 — a label leak).
    inout_loss_weight: weight of the in/out BCE (0 = off, GCDR's --no_inout); labeled rows only, plus the
                       unlabeled rows' GT flag with unlabeled_inout=gt.
    amp_factor:        VAT MSE amplification (10000).
    eval_every:        0 = score the test split once, after the last epoch (the reported model); N > 0 also
                       every N epochs, for plotting only: no checkpoint is chosen by test metrics.
    eval_protocol:     auto (vat -> gcdr, gazelle -> gazelle) | gcdr | vat | gazelle (gcdr.metrics).
    num_workers:       DataLoader workers (worker processes run torch single-threaded: on a busy CPU
                       1-2 workers keep image decoding / augmentation off the training thread).
    cpu_threads:       torch threads of the training process when it runs on the CPU (None = torch's
                       default). On a shared, oversubscribed CPU 1 thread can be several times faster.
    mixed_precision, grad_accum: None = whatever `accelerate launch` / its config says.
    seed:              sampler, augmentation and init seed.
    """

    model: str = "vat"
    backbone: str = "resnet18"
    vat_width: int | None = None
    vat_input_size: int = 224
    vat_zero_init_output: bool = False
    vat_lstm_layers: int = 2
    vat_video_trained: str = "decoder"
    vat_skip_bn_for_single_row: bool = False
    clip_length: int = 50
    chunk_length: int = 3
    init_weights: str | None = None
    gazelle_backbone: str = "facebook/dinov2-base"
    gazelle_input_size: int = 448
    gazelle_inout: bool = False
    gazelle_dim: int = 256
    gazelle_layers: int = 3
    gazelle_heads: int = 8
    feature_cache: bool = False
    cache_flip: bool = False
    epochs: int = 8
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    batch_size: int = 32
    labeled_per_batch: int | None = None
    lr: float = 2.5e-4
    gazelle_lr: float = 1e-3
    lr_schedule: str = "auto"
    inout_lr: float | None = None
    weight_decay: float = 0.0
    pseudo_weight: float = 1.0
    pseudo_draws: str = "mean"
    pseudo_confidence: str = "none"
    pseudo_keep: float = 0.5
    unlabeled_inout: str = "ignore"
    inout_loss_weight: float = 0.0
    amp_factor: float = 10000.0
    eval_every: int = 0
    eval_protocol: str = "auto"
    num_workers: int = 0
    cpu_threads: int | None = None
    mixed_precision: str | None = None
    grad_accum: int | None = None
    seed: int = 0
    gradcam_folders: list[str] | None = None

    def __post_init__(self) -> None:
        from gcdr.students.registry import STUDENTS

        if self.pseudo_confidence is None:  # `--set student.pseudo_confidence=none` parses as null
            self.pseudo_confidence = "none"
        choices = {"model": tuple(STUDENTS), "lr_schedule": ("auto", "multistep", "cosine", "constant"),
                   "unlabeled_inout": ("ignore", "gt"), "pseudo_draws": ("mean", "per_pass"),
                   "pseudo_confidence": ("none", "weight", "filter"),
                   "eval_protocol": ("auto", "gcdr", "vat", "gazelle"), "vat_video_trained": ("decoder", "all")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"student.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.gradcam_folders is not None and (not isinstance(self.gradcam_folders, list) or not all(
                isinstance(f, str) for f in self.gradcam_folders)):
            raise ValueError(f"student.gradcam_folders must be a list of folders ([a,b]) or null, "
                             f"got {self.gradcam_folders!r}")
        if not 0 < self.pseudo_keep <= 1:
            raise ValueError(f"student.pseudo_keep must be in (0, 1], got {self.pseudo_keep}")
        if self.inout_lr is not None and not self.inout_lr > 0:
            raise ValueError(f"student.inout_lr must be > 0 or null, got {self.inout_lr}")
        for name in ("vat_lstm_layers", "clip_length", "chunk_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"student.{name} must be >= 1, got {getattr(self, name)}")
        if self.labeled_per_batch is not None and not 0 < self.labeled_per_batch < self.batch_size:
            raise ValueError(f"student.labeled_per_batch must be in (0, batch_size={self.batch_size}), "
                             f"got {self.labeled_per_batch}")

    @property
    def student_class(self) -> type:
        """The registered student class of ``model`` (gcdr.students.registry)."""
        from gcdr.students.registry import student_class

        return student_class(self.model)

    @property
    def learning_rate(self) -> float:
        return getattr(self, self.student_class.lr_field)

    @property
    def protocol(self) -> str:
        return self.student_class.protocol if self.eval_protocol == "auto" else self.eval_protocol

    @property
    def schedule(self) -> str:
        """``lr_schedule`` with ``auto`` resolved to the student's recipe."""
        return self.student_class.lr_schedule if self.lr_schedule == "auto" else self.lr_schedule


def student_config(cfg: dict[str, Any]) -> StudentConfig:
    """The ``student:`` section of a whole config, ``gazelle_backbone: vqa`` resolved to ``vqa.model``."""
    from gcdr.config import section

    student = section(cfg, "student", StudentConfig)
    if student.gazelle_backbone == VQA_BACKBONE:
        student = dataclasses.replace(student, gazelle_backbone=str((cfg.get("vqa") or {}).get("model")))
    return student
