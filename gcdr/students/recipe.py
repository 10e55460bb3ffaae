"""What every student's training shares (its recipe): the training set (labeled + valid pseudo-labeled
persons), the epoch batch sampler, the per-row targets of a batch, the loss of a batch, the learning-rate schedule.

The loop that uses them is gcdr.students.train; the students themselves are chosen in gcdr.students.registry.

Targets per row (docs/method.md#targets-per-row, #gaze-lle-as-student):
- labeled rows: the ground-truth Gaussian (``target_heatmap_64``), counted when ``has_target``
  (labeled and in frame);
- unlabeled rows: the pseudo-label map (``prior_heatmap_64``, cropped / flipped with the image), min-max
  normalised again after augmentation, counted when the folder marks it valid, weighted by
  ``pseudo_weight``.
Losses: each student's ``heatmap_loss`` (VAT = masked per-sample MSE x 10000 on the raw heatmap; Gaze-LLE = BCE
on its sigmoid output), plus the in/out BCE when ``inout_loss_weight`` > 0.

In/out of unlabeled rows (``unlabeled_inout``): GCDR as coded drops unlabeled rows whose *ground-truth*
in/out flag is 0 (``"gt"`` — a label leak: the unlabeled rows' annotation decides what is trained on);
the default ``"ignore"`` never reads their annotation: every valid pseudo-labeled row is a target, as it
would be for truly unlabeled images.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from gcdr.data.sample import IN_FRAME, PersonSample
from gcdr.heatmaps import normalize_heatmaps
from gcdr.pseudolabels import PseudoLabelFolder
from gcdr.students.config import StudentConfig, student_config  # noqa: F401 (gcdr.config.SECTIONS names it here)
from gcdr.students.vat import inout_bce_loss

log = logging.getLogger(__name__)


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


def student_loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: StudentConfig) -> tuple[torch.Tensor, dict]:
    """Loss of one batch: heatmap loss over the masked rows (+ in/out BCE when weighted); and log values.

    model: the :class:`gcdr.students.student.Student` of ``cfg.model`` (possibly wrapped by Accelerate / DDP).
    """
    targets = batch_targets(batch, cfg)
    rows = cfg.student_class.loss_rows(batch)  # e.g. VAT-GC: only rows with a valid Grad-CAM
    if rows is not None:
        targets["mask"] = targets["mask"].bool() & rows
    heatmap, inout = model(batch, return_logits=True)
    heatmap_loss = cfg.student_class.heatmap_loss(heatmap, targets["target_64"], targets["mask"], targets["weight"],
                                                  cfg)
    loss = heatmap_loss
    logs = {"heatmap_loss": float(heatmap_loss.detach()), "rows": int(targets["mask"].sum())}
    if cfg.inout_loss_weight > 0 and inout is not None:
        inout_loss = inout_bce_loss(inout, targets["inout"], cfg.inout_loss_weight)
        loss = loss + inout_loss
        logs["inout_loss"] = float(inout_loss.detach())
    return loss, logs


def lr_lambda(cfg: StudentConfig, total_epochs: int):
    """Per-epoch LR factor of ``cfg.lr_schedule`` (the scheduler is stepped once per epoch)."""
    schedule = cfg.schedule
    if schedule == "multistep":
        milestone = max(1, round(0.6 * total_epochs))
        return lambda epoch: 0.2 if epoch >= milestone else 1.0
    if schedule == "cosine":
        floor = 1e-7 / cfg.learning_rate
        return lambda epoch: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, total_epochs)
                                                                          / total_epochs))
    return lambda epoch: 1.0
