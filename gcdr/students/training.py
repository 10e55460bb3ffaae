"""What both students share for training and evaluation: the ``student:`` config, building a student
from a stored model config, the training set (labeled + valid pseudo-labeled persons), one forward
pass / loss on a batch of ``GazeDataset`` items, the epoch batch sampler, and checkpoints.

The loop itself lives in ``pipelines/train_student.py``.

Targets per row (docs/method.md#targets-per-row, #gaze-lle-as-student):
- labeled rows: the ground-truth Gaussian (``target_heatmap_64``), counted when ``has_target``
  (labeled and in frame);
- unlabeled rows: the pseudo-label map (``prior_heatmap_64``, cropped / flipped with the image), min-max
  normalised again after augmentation, counted when the folder marks it valid, weighted by
  ``pseudo_weight``.
Losses: VAT = masked per-sample MSE x 10000 on the raw heatmap; Gaze-LLE = BCE on its sigmoid output.

In/out of unlabeled rows (``unlabeled_inout``): GCDR as coded drops unlabeled rows whose *ground-truth*
in/out flag is 0 (``"gt"`` — a label leak: the unlabeled rows' annotation decides what is trained on);
the default ``"ignore"`` never reads their annotation: every valid pseudo-labeled row is a target, as it
would be for truly unlabeled images.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from gcdr.atomic import atomic_path
from gcdr.data.sample import IN_FRAME, PersonSample
from gcdr.heatmaps import head_box_grid_mask, normalize_heatmaps
from gcdr.pseudolabels import PseudoLabelFolder
from gcdr.students.gazelle import GazeLLE, gazelle_heatmap_bce_loss, load_backbone
from gcdr.students.vat import VATSpatial, heatmap_mse_loss, inout_bce_loss, load_vat_weights

log = logging.getLogger(__name__)

MODELS = ("vat", "gazelle")
TINY_DINOV2 = "tiny-dinov2"  # gazelle_backbone value: a seeded random tiny DINOv2 saved under <out_root>/models
TINY_DINOV2_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          patch_size=14, image_size=224)


@dataclass
class StudentConfig:
    """The ``student:`` config section (``make train-student``).

    model:             vat | gazelle.
    backbone:          VAT pathways: resnet50 (official, weights load) | resnet18 (small stand-in).
    vat_width:         resnet18 channel width (None = 32); resnet50 ignores it.
    vat_input_size:    scene / face / head-channel side for VAT; 224 = VAT. Smaller (e.g. 128) is a CPU-demo
                       option: inputs are resized to it, the feature grid shrinks and the heatmap is
                       resized to 64x64 (not VAT any more, but 3-4x cheaper).
    vat_zero_init_output: start VAT's last 1x1 conv at zero (see VATSpatial); for short runs from scratch.
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
    weight_decay:      Adam weight decay (0 in both recipes).
    pseudo_weight:     loss weight of pseudo-labeled rows (labeled rows: 1).
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
    weight_decay: float = 0.0
    pseudo_weight: float = 1.0
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

    def __post_init__(self) -> None:
        choices = {"model": MODELS, "lr_schedule": ("auto", "multistep", "cosine", "constant"),
                   "unlabeled_inout": ("ignore", "gt"),
                   "eval_protocol": ("auto", "gcdr", "vat", "gazelle")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"student.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.labeled_per_batch is not None and not 0 < self.labeled_per_batch < self.batch_size:
            raise ValueError(f"student.labeled_per_batch must be in (0, batch_size={self.batch_size}), "
                             f"got {self.labeled_per_batch}")

    @property
    def learning_rate(self) -> float:
        return self.gazelle_lr if self.model == "gazelle" else self.lr

    @property
    def protocol(self) -> str:
        if self.eval_protocol != "auto":
            return self.eval_protocol
        return "gazelle" if self.model == "gazelle" else "gcdr"

    @property
    def style(self) -> str:
        return "gazelle" if self.model == "gazelle" else "vat"

    @property
    def scene_size(self) -> int:
        return self.gazelle_input_size if self.model == "gazelle" else self.vat_input_size


# ------------------------------------------------------------------------------------------ building

VQA_BACKBONE = "vqa"  # gazelle_backbone value: the frozen vision tower of the config's vqa.model


def student_config(cfg: dict[str, Any]) -> StudentConfig:
    """The ``student:`` section of a whole config, ``gazelle_backbone: vqa`` resolved to ``vqa.model``."""
    from gcdr.config import section

    student = section(cfg, "student", StudentConfig)
    if student.gazelle_backbone == VQA_BACKBONE:
        student = dataclasses.replace(student, gazelle_backbone=str((cfg.get("vqa") or {}).get("model")))
    return student


def model_config(cfg: StudentConfig, out_root: str | Path | None = None) -> dict[str, Any]:
    """What a checkpoint stores to rebuild its student (a plain JSON-able dict)."""
    if cfg.model == "vat":
        return {"model": "vat", "backbone": cfg.backbone, "width": cfg.vat_width,
                "input_size": cfg.vat_input_size, "zero_init_output": cfg.vat_zero_init_output}
    backbone = cfg.gazelle_backbone
    if backbone == TINY_DINOV2:
        backbone = str(ensure_tiny_dinov2(Path(out_root or ".") / "models" / TINY_DINOV2, seed=cfg.seed))
    return {"model": "gazelle", "backbone": backbone, "inout": cfg.gazelle_inout,
            "input_size": cfg.gazelle_input_size, "dim": cfg.gazelle_dim, "num_layers": cfg.gazelle_layers,
            "num_heads": cfg.gazelle_heads}


def build_student(config: dict[str, Any]) -> nn.Module:
    """A freshly initialised student from a :func:`model_config` dict."""
    if config["model"] == "vat":
        return VATSpatial(config["backbone"], width=config.get("width"), input_size=config.get("input_size", 224),
                          zero_init_output=config.get("zero_init_output", False))
    if config["model"] == "gazelle":
        backbone = load_backbone(config["backbone"])
        return GazeLLE(backbone, inout=config.get("inout", False), input_size=config.get("input_size", 448),
                       dim=config.get("dim", 256), num_layers=config.get("num_layers", 3),
                       num_heads=config.get("num_heads", 8))
    raise ValueError(f"unknown student model {config['model']!r}; choose from {MODELS}")


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


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The student's state without a frozen backbone (Gaze-LLE: official checkpoint keys; VAT: all 771)."""
    if isinstance(model, GazeLLE):
        return model.decoder_state_dict()
    return model.state_dict()


def load_init_weights(model: nn.Module, path: str | Path) -> None:
    """Initial weights: VAT by name+shape matching, Gaze-LLE by non-strict intersection (both logged)."""
    if isinstance(model, GazeLLE):
        report = model.load_decoder_state_dict(path)
    else:
        report = load_vat_weights(model, path)
    log.info("init weights %s: %d loaded, %d missing, %d unexpected", path, len(report.loaded),
             len(report.missing), len(report.unexpected))


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any], **extra: Any) -> None:
    """Atomically write ``{"model_config", "state_dict", **extra}``; the state excludes a frozen backbone."""
    state = {k: v.detach().cpu() for k, v in trainable_state_dict(model).items()}
    with atomic_path(path) as tmp:
        torch.save({"model_config": config, "state_dict": state, **extra}, tmp)


def load_student(path: str | Path, map_location: str | torch.device = "cpu",
                 backbone: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a student from a checkpoint; returns (model in eval mode, checkpoint).

    A checkpoint of :func:`save_checkpoint` rebuilds itself from its model config and loads strictly
    (Gaze-LLE: every non-backbone key must be there). An official file (gazelle's decoder state dict, e.g.
    ``gazelle_dinov2_vitb14.pt``, or VAT's ``{'model': ModelSpatial state}``, e.g. ``model_gazefollow.pt``) is
    recognised by its keys and sized from its shapes (gcdr.students.export.official_student); the returned
    checkpoint then holds the inferred ``model_config``, the ``state_dict`` and ``official`` (vat | gazelle).
    ``backbone``: the Gaze-LLE backbone for official Gaze-LLE files (see :func:`configured_gazelle_backbone`;
    None = the DINOv2 of the file's feature width); gcdr checkpoints name their own.
    """
    from gcdr.checkpoints import load_torch_file
    from gcdr.students.export import official_kind, official_student

    checkpoint = load_torch_file(path, map_location=map_location, weights_only=False,
                                 hint="delete it and rerun train-student")
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint:
        kind = official_kind(checkpoint)
        if kind is None:
            raise ValueError(f"{path}: neither a gcdr student checkpoint (no model_config) nor an official "
                             "Gaze-LLE decoder / VAT {'model': ModelSpatial state} file")
        model, config = official_student(checkpoint, backbone)
        return model, {"model_config": config, "state_dict": trainable_state_dict(model), "official": kind}
    model = build_student(checkpoint["model_config"])
    if isinstance(model, GazeLLE):
        report = model.load_decoder_state_dict(checkpoint["state_dict"])
        if report.missing or report.unexpected:
            raise ValueError(f"{path}: missing {report.missing}, unexpected {report.unexpected}")
    else:
        model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def configured_gazelle_backbone(cfg: dict[str, Any]) -> str:
    """``student.gazelle_backbone`` of a whole config as training resolves it (``vqa`` -> ``vqa.model``,
    ``tiny-dinov2`` -> ``<out_root>/models/tiny-dinov2``): the ``backbone`` of :func:`load_student`."""
    from gcdr import paths

    name = student_config(cfg).gazelle_backbone
    return str(paths.out_root(cfg) / "models" / TINY_DINOV2) if name == TINY_DINOV2 else name


# -------------------------------------------------------------------------------------- training set

@dataclass
class TrainingSet:
    """The persons a student trains on and why the others were left out.

    samples / labeled: the persons and their labeled flag (labeled first, then pseudo-labeled);
    counts: labeled, pseudo (kept), and the unlabeled persons dropped per reason
    (``pseudo_missing``: not in the folder, ``pseudo_invalid:<reason>``, ``gt_out_of_frame`` with
    unlabeled_inout=gt).
    """

    samples: list[PersonSample]
    labeled: list[bool]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def labeled_indices(self) -> list[int]:
        return [i for i, flag in enumerate(self.labeled) if flag]

    @property
    def unlabeled_indices(self) -> list[int]:
        return [i for i, flag in enumerate(self.labeled) if not flag]


def assemble_training_set(labeled: Sequence[PersonSample], unlabeled: Sequence[PersonSample],
                          pseudo: PseudoLabelFolder | None, unlabeled_inout: str = "ignore") -> TrainingSet:
    """Labeled persons + the unlabeled persons that have a valid pseudo-label (none when ``pseudo`` is None).

    Invalid and missing pseudo-labels are counted per reason and logged, never silently dropped.
    """
    if unlabeled_inout not in ("ignore", "gt"):
        raise ValueError(f"unlabeled_inout must be 'ignore' or 'gt', got {unlabeled_inout!r}")
    counts: Counter[str] = Counter(labeled=len(labeled))
    kept: list[PersonSample] = []
    if pseudo is not None:
        for sample in unlabeled:
            if sample.sample_id not in pseudo:
                counts["pseudo_missing"] += 1
            elif not pseudo.is_valid(sample.sample_id):
                reason = pseudo.manifest.at[pseudo._index[sample.sample_id], "invalid_reason"] or "invalid"
                counts[f"pseudo_invalid:{reason}"] += 1
            elif unlabeled_inout == "gt" and sample.inout != IN_FRAME:
                counts["gt_out_of_frame"] += 1
            else:
                kept.append(sample)
        counts["pseudo"] = len(kept)
        dropped = {k: v for k, v in counts.items() if k not in ("labeled", "pseudo")}
        log.info("training set: %d labeled + %d pseudo-labeled of %d unlabeled persons; dropped %s",
                 len(labeled), len(kept), len(unlabeled), dropped or "none")
        if counts["pseudo_missing"]:
            log.warning("%d unlabeled persons have no entry in %s", counts["pseudo_missing"], pseudo.folder)
    else:
        counts["pseudo"] = 0
        log.info("training set: %d labeled persons (no pseudo-labels)", len(labeled))
    return TrainingSet(list(labeled) + kept, [True] * len(labeled) + [False] * len(kept), dict(counts))


# ---------------------------------------------------------------------------------------- batches

class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """``steps`` batches per epoch, reshuffled per epoch from ``seed`` (call ``set_epoch``).

    labeled_per_batch None: batches from one permutation of all indices (repeated when more are needed);
    k: two-stream batches as GCDR, k from the labeled indices + the rest from the unlabeled ones, each
    stream cycling through its own permutations.
    Batches hold ``(index, draw)`` keys, draw = how many times the stream already passed over the index in this
    epoch: a person seen twice in one epoch (few labeled persons, many steps) gets two different augmentations.
    """

    def __init__(self, labeled_indices: Sequence[int], unlabeled_indices: Sequence[int], batch_size: int,
                 labeled_per_batch: int | None = None, steps: int | None = None, seed: int = 0):
        self.labeled = np.asarray(labeled_indices, np.int64)
        self.unlabeled = np.asarray(unlabeled_indices, np.int64)
        self.batch_size = batch_size
        self.labeled_per_batch = labeled_per_batch if len(self.unlabeled) and len(self.labeled) else None
        n_total = len(self.labeled) + len(self.unlabeled)
        if n_total == 0:
            raise ValueError("no training persons")
        if self.labeled_per_batch is None:
            default_steps = max(1, n_total // batch_size)
        else:
            default_steps = max(1, len(self.unlabeled) // (batch_size - self.labeled_per_batch))
        self.steps = steps or default_steps
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps

    @staticmethod
    def _stream(indices: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[int, int]]:
        for draw in itertools.count():
            yield from ((index, draw) for index in rng.permutation(indices).tolist())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.labeled_per_batch is None:
            stream = self._stream(np.concatenate([self.labeled, self.unlabeled]), rng)
            for _ in range(self.steps):
                yield [next(stream) for _ in range(self.batch_size)]
            return
        labeled, unlabeled = self._stream(self.labeled, rng), self._stream(self.unlabeled, rng)
        for _ in range(self.steps):
            yield ([next(labeled) for _ in range(self.labeled_per_batch)]
                   + [next(unlabeled) for _ in range(self.batch_size - self.labeled_per_batch)])


def batch_targets(batch: dict[str, torch.Tensor], cfg: StudentConfig) -> dict[str, torch.Tensor]:
    """Per-row training targets of a GazeDataset batch.

    Returns target_64 [B, 64, 64], mask [B] (rows with a heatmap loss), weight [B], inout [B] (-1 = no
    in/out loss for the row).
    """
    is_labeled = batch["is_labeled"].bool()  # [B]
    # crops change the range: re-normalise as GCDR does (kept although the dataset's crop already normalised:
    # see gcdr.heatmaps, a repeat can change the last bits of a map of tiny range)
    prior, low, high = normalize_heatmaps(batch["prior_heatmap_64"].float(), return_range=True)  # [B, 64, 64]
    pseudo_ok = batch["prior_valid"].bool() & (high > low)
    if cfg.unlabeled_inout == "gt":
        pseudo_ok = pseudo_ok & (batch["inout"] == IN_FRAME)
    target = torch.where(is_labeled[:, None, None], batch["target_heatmap_64"].float(), prior)
    mask = torch.where(is_labeled, batch["has_target"].bool(), pseudo_ok)
    weight = torch.where(is_labeled, torch.ones_like(prior[:, 0, 0]), torch.full_like(prior[:, 0, 0],
                                                                                       cfg.pseudo_weight))
    inout = batch["inout"].float()
    if cfg.unlabeled_inout != "gt":
        inout = torch.where(is_labeled, inout, torch.full_like(inout, -1.0))
    return {"target_64": target, "mask": mask, "weight": weight, "inout": inout}


def forward_batch(student: nn.Module, batch: dict[str, torch.Tensor],
                  return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a (bare) student on a batch of GazeDataset items, one person per row.

    VAT: (raw heatmap [B, 64, 64], in/out logit [B]). Gaze-LLE: (heatmap [B, 64, 64] in [0, 1] — or its
    logits —, in/out probability — or logit — [B], or None). A batch may carry precomputed backbone
    features (``"features"`` [B, D, g, g], the feature cache) instead of ``"scene"``.
    """
    if isinstance(student, GazeLLE):
        features = batch["features"].float() if "features" in batch else student.backbone(batch["scene"])
        head_maps = head_box_grid_mask(batch["head_box_xyxy_norm"], student.grid)  # [B, g, g]
        return student.decode(features, head_maps, return_logits=return_logits)
    return student(batch["scene"], batch["head_channel"], batch["face"])


class BatchStudent(nn.Module):
    """A student that takes a whole batch dict; what Accelerate prepares, so that DDP sees every forward.

    ``self.student`` is the bare VATSpatial / GazeLLE (its state dict is what checkpoints hold).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, batch: dict[str, torch.Tensor],
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return forward_batch(self.student, batch, return_logits)


def student_loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: StudentConfig) -> tuple[torch.Tensor, dict]:
    """Loss of one batch: heatmap loss over the masked rows (+ in/out BCE when weighted); and log values.

    model: a :class:`BatchStudent` (possibly wrapped by Accelerate / DDP).
    """
    targets = batch_targets(batch, cfg)
    heatmap, inout = model(batch, return_logits=True)
    if cfg.model == "gazelle":
        heatmap_loss = gazelle_heatmap_bce_loss(heatmap, targets["target_64"], targets["mask"], targets["weight"])
    else:
        heatmap_loss = heatmap_mse_loss(heatmap, targets["target_64"], targets["mask"], targets["weight"],
                                        amp_factor=cfg.amp_factor)
    loss = heatmap_loss
    logs = {"heatmap_loss": float(heatmap_loss.detach()), "rows": int(targets["mask"].sum())}
    if cfg.inout_loss_weight > 0 and inout is not None:
        inout_loss = inout_bce_loss(inout, targets["inout"], cfg.inout_loss_weight)
        loss = loss + inout_loss
        logs["inout_loss"] = float(inout_loss.detach())
    return loss, logs


@torch.no_grad()
def predict_batch(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Evaluation outputs of a :class:`BatchStudent`: (heatmap [B, 64, 64] as the model emits it, in/out
    score [B] or None)."""
    heatmap, inout = model(batch, return_logits=False)
    return heatmap.float(), (inout.float() if inout is not None else None)


def lr_lambda(cfg: StudentConfig, total_epochs: int):
    """Per-epoch LR factor of ``cfg.lr_schedule`` (the scheduler is stepped once per epoch)."""
    schedule = cfg.lr_schedule
    if schedule == "auto":
        schedule = "cosine" if cfg.model == "gazelle" else "multistep"
    if schedule == "multistep":
        milestone = max(1, round(0.6 * total_epochs))
        return lambda epoch: 0.2 if epoch >= milestone else 1.0
    if schedule == "cosine":
        floor = 1e-7 / cfg.learning_rate
        return lambda epoch: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, total_epochs)
                                                                          / total_epochs))
    return lambda epoch: 1.0


def config_dict(cfg: StudentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ------------------------------------------------------------------------------------------ inference

def dataset_for_student(samples: Sequence[PersonSample], config: dict[str, Any], on_error: str = "raise",
                        dataset_format: str = "gazefollow"):
    """An evaluation GazeDataset (no augmentation) in the input style of a student's model config.

    VAT-style head boxes are enlarged by 10 % for GazeFollow-format data only (docs/official-code.md#head-box-enlargement-and-head-channel).
    """
    from gcdr.data.dataset import GazeDataset

    style = "gazelle" if config["model"] == "gazelle" else "vat"
    return GazeDataset(samples, train=False, style=style, labeled=True, scene_size=config.get("input_size"),
                       on_error=on_error, enlarge_head_box=dataset_format == "gazefollow")


def image_grouped_batches(dataset, max_persons: int) -> list[list[int]]:
    """Batches of dataset indices holding whole images (all persons of an image in one batch)."""
    by_image: dict[str, list[int]] = {}
    for index, sample in enumerate(dataset.samples):
        by_image.setdefault(sample.image_path, []).append(index)
    batches, current = [], []
    for indices in by_image.values():
        if current and len(current) + len(indices) > max_persons:
            batches.append(current)
            current = []
        current = current + indices
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def predict_dataset(student: nn.Module, dataset, batch_size: int = 32, device: str | torch.device = "cpu",
                    num_workers: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Heatmaps [N, 64, 64] (as the model emits them) and in/out scores [N] (or None) for every dataset item.

    Gaze-LLE runs its backbone once per image (persons of an image share a batch; features repeated per
    head, as the official multi-person forward); VAT runs per person.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    student = student.to(device).eval()
    heatmaps = np.zeros((len(dataset), 64, 64), np.float32)
    inouts = np.zeros(len(dataset), np.float32)
    has_inout = False
    loader = DataLoader(dataset, batch_sampler=image_grouped_batches(dataset, batch_size), num_workers=num_workers)
    for batch in tqdm(loader, desc="predict", disable=not progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        if isinstance(student, GazeLLE):
            paths = [dataset.samples[i].image_path for i in batch["index"].tolist()]
            first = {p: i for i, p in reversed(list(enumerate(paths)))}  # image -> its first row
            unique_rows = sorted(set(first.values()))
            features = student.backbone(batch["scene"][unique_rows])  # [I, D, g, g]
            position = {row: k for k, row in enumerate(unique_rows)}
            features = features[[position[first[p]] for p in paths]]  # [B, D, g, g]
            head_maps = head_box_grid_mask(batch["head_box_xyxy_norm"], student.grid)
            heatmap, inout = student.decode(features, head_maps)
        else:
            heatmap, inout = forward_batch(student, batch)
        index = batch["index"].cpu().numpy()
        heatmaps[index] = heatmap.float().cpu().numpy()
        if inout is not None:
            inouts[index] = inout.float().cpu().numpy()
            has_inout = True
    return heatmaps, (inouts if has_inout else None)
