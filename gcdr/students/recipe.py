"""What every student's training shares (its recipe): the training set (labeled + valid pseudo-labeled
persons), the epoch batch sampler, the per-row targets of a batch, the loss of a batch, the learning-rate schedule.

The loop that uses them is gcdr.students.train; the students themselves are chosen in gcdr.students.registry.

Targets per row (docs/method.md#targets-per-row, #gaze-lle-as-student):
- labeled rows: the ground-truth Gaussian (``target_heatmap_64``), counted when ``has_target``
  (labeled and in frame);
- unlabeled rows: the pseudo-label map (``prior_heatmap_64``, cropped / flipped with the image; with
  ``pseudo_draws: per_pass`` one of the person's K refined draws, another each epoch), min-max normalised again
  after augmentation, counted when the folder marks it valid, weighted by ``pseudo_weight`` (times the person's
  confidence weight ``prior_weight`` with ``pseudo_confidence: weight``).
Confidence (``pseudo_confidence``, :func:`apply_confidence`): from the folder's ``draw_spread`` of the
pseudo-labeled persons, ``weight`` rescales their loss, ``filter`` keeps the ``pseudo_keep`` fraction with the
lowest spread (docs/method.md#k-draws-and-confidence).
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
from gcdr.errors import UserError
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
    unlabeled_inout=gt, ``pseudo_low_confidence`` with pseudo_confidence=filter);
    pseudo_weights: sample id -> confidence weight of a pseudo-labeled person (pseudo_confidence=weight; mean 1),
    empty otherwise.
    """

    samples: list[PersonSample]
    labeled: list[bool]
    counts: dict[str, int] = field(default_factory=dict)
    pseudo_weights: dict[str, float] = field(default_factory=dict)

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


class PseudoOptionsError(UserError, ValueError):
    """A pseudo-label option (student.pseudo_draws / pseudo_confidence) the folder cannot serve; one line."""


def check_pseudo_options(cfg: StudentConfig, pseudo: PseudoLabelFolder | None) -> None:
    """Refuse, in one line naming the folder, per_pass without stored draws and a confidence mode without
    draw_spread values (folders refined without refine.keep_draws), or either without a folder."""
    asked = [f"student.{name}={value}" for name, value, default in (
        ("pseudo_draws", cfg.pseudo_draws, "mean"), ("pseudo_confidence", cfg.pseudo_confidence, "none"))
        if value != default]
    if not asked:
        return
    if pseudo is None:
        raise PseudoOptionsError(f"{' and '.join(asked)} concern pseudo-labels: train with a pseudo-label folder "
                                 "(PSEUDO=<folder>), or leave them at their defaults")
    how = "refine it again with refine.keep_draws=true refine.samples=K (K >= 2)"
    if cfg.pseudo_draws == "per_pass" and not pseudo.has_draws:
        raise PseudoOptionsError(f"{pseudo.folder} holds no refined draws, which student.pseudo_draws=per_pass "
                                 f"trains on: {how}, or use student.pseudo_draws=mean")
    if cfg.pseudo_confidence != "none" and not pseudo.has_draw_spread:
        raise PseudoOptionsError(f"{pseudo.folder} has no draw_spread values, which student.pseudo_confidence="
                                 f"{cfg.pseudo_confidence} ranks: {how}, or use student.pseudo_confidence=none")


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks from 0 (smallest) to n - 1; tied values share their mean rank. [n] float64."""
    values = np.asarray(values, np.float64)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, groups = np.unique(values, return_inverse=True)
    return (np.bincount(groups, weights=ranks) / np.bincount(groups))[groups]


def spread_confidence(spreads: Sequence[float] | np.ndarray) -> np.ndarray:
    """1 - rank / (n - 1) per spread (:func:`average_ranks`: the lowest spread gets confidence 1, the highest 0,
    tied spreads the same). [n] float64; a single spread gets 1."""
    n = len(spreads)
    if n <= 1:
        return np.ones(n)
    return 1.0 - average_ranks(spreads) / (n - 1)


def apply_confidence(train_set: TrainingSet, pseudo: PseudoLabelFolder | None, cfg: StudentConfig) -> TrainingSet:
    """``cfg.pseudo_confidence`` applied to the pseudo-labeled persons of ``train_set`` (module docstring):
    ``weight`` fills ``pseudo_weights`` (confidence / its mean), ``filter`` keeps round(pseudo_keep x n) of them
    (half up, at least 1), those of lowest draw_spread, ties by sample id, in their order; ``none``: unchanged."""
    indices = train_set.unlabeled_indices
    if pseudo is None or cfg.pseudo_confidence == "none" or not indices:
        return train_set
    ids = [train_set.samples[i].sample_id for i in indices]
    spreads = np.array([pseudo.draw_spread(sample_id) for sample_id in ids])
    lacking = np.flatnonzero(~np.isfinite(spreads))
    if len(lacking):
        raise PseudoOptionsError(f"{pseudo.folder} has no draw_spread for {len(lacking)} of the {len(ids)} "
                                 f"pseudo-labeled persons (e.g. {ids[lacking[0]]!r}), which "
                                 f"student.pseudo_confidence={cfg.pseudo_confidence} ranks: refine it again with "
                                 "refine.keep_draws=true")
    counts = dict(train_set.counts)
    if cfg.pseudo_confidence == "weight":
        confidence = spread_confidence(spreads)
        weights = confidence / confidence.mean()
        log.info("confidence weights of %d pseudo-labeled persons: %.3f to %.3f (mean 1), from draw_spread %.4f "
                 "to %.4f", len(ids), weights.min(), weights.max(), spreads.min(), spreads.max())
        return TrainingSet(train_set.samples, train_set.labeled, counts, dict(zip(ids, weights.tolist())))
    n_keep = max(1, math.floor(cfg.pseudo_keep * len(ids) + 0.5))
    order = sorted(range(len(ids)), key=lambda k: (spreads[k], ids[k]))
    dropped = {indices[k] for k in order[n_keep:]}
    kept = [i for i in range(len(train_set.samples)) if i not in dropped]
    counts["pseudo"] = n_keep
    counts["pseudo_low_confidence"] = len(dropped)
    log.info("confidence filter (student.pseudo_keep=%g): kept %d of %d pseudo-labeled persons (draw_spread <= "
             "%.4f), dropped %d", cfg.pseudo_keep, n_keep, len(ids), spreads[order[n_keep - 1]], len(dropped))
    return TrainingSet([train_set.samples[i] for i in kept], [train_set.labeled[i] for i in kept], counts)


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
    pseudo_weight = torch.full_like(prior[:, 0, 0], cfg.pseudo_weight)
    if "prior_weight" in batch:  # per-person confidence weights (pseudo_confidence: weight)
        pseudo_weight = pseudo_weight * batch["prior_weight"].float()
    weight = torch.where(is_labeled, torch.ones_like(prior[:, 0, 0]), pseudo_weight)
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
