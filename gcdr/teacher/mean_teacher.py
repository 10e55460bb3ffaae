"""GCDR's mean teacher for the diffusion model (docs/method.md#mean-teacher): EMA weights, consistency, two-stream batches.

The student is trained; the teacher is an exponential moving average of the student's parameters
(BatchNorm statistics are not averaged). The teacher's DDIM prediction from pure noise supervises the
student's one-shot x0 prediction from pure noise on every in-frame row through a KL (or MSE) consistency
whose weight ramps up over the first epochs. The checkpoint kept is the student's, as in GCDR.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler


def make_ema_teacher(student: nn.Module) -> nn.Module:
    """A detached copy of the student (no gradients), to be updated with :func:`update_ema`."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def ema_decay_at(step: int, max_decay: float = 0.99, ramp_every: int = 15) -> float:
    """GCDR's ramped decay for the update after ``step`` optimiser steps (0-based):
    min(1 - 1 / (floor(step / ramp_every) + 1), max_decay): 0 for steps 0-14, 0.5 for 15-29, ..., 0.99 from 1485.
    """
    return min(1.0 - 1.0 / (step // ramp_every + 1), max_decay)


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, step: int, max_decay: float = 0.99,
               ramp_every: int = 15) -> float:
    """theta_T <- a theta_T + (1 - a) theta_S over parameters only; returns the decay a used."""
    decay = ema_decay_at(step, max_decay, ramp_every)
    for teacher_param, student_param in zip(teacher.parameters(), student.parameters(), strict=True):
        teacher_param.mul_(decay).add_(student_param.detach(), alpha=1.0 - decay)
    return decay


def consistency_weight(epoch: int, weight: float = 4000.0, rampup_epochs: int = 5) -> float:
    """Sigmoid ramp-up: weight * exp(-5 (1 - min(epoch, R) / R)^2) (about 27 at epoch 0, ``weight`` from R)."""
    if rampup_epochs <= 0:
        return weight
    phase = 1.0 - min(max(epoch, 0), rampup_epochs) / rampup_epochs
    return weight * math.exp(-5.0 * phase * phase)


def consistency_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, mask: torch.Tensor,
                     kind: str = "kl") -> torch.Tensor:
    """Mean over masked rows of a per-row consistency between [B, 64, 64] maps.

    ``kl``: KL(softmax(teacher over all pixels) || softmax(student)) = sum p_T (log p_T - log_softmax(student));
    ``mse``: mean squared difference. Returns 0 (with a graph) when the mask is empty.
    """
    mask = mask.bool()
    if not mask.any():
        return student_maps.sum() * 0.0
    student_flat = student_maps[mask].flatten(1).float()  # [M, 4096]
    teacher_flat = teacher_maps[mask].flatten(1).float().detach()
    if kind == "kl":
        log_p_teacher = F.log_softmax(teacher_flat, dim=1)
        per_row = (log_p_teacher.exp() * (log_p_teacher - F.log_softmax(student_flat, dim=1))).sum(1)
    elif kind == "mse":
        per_row = (student_flat - teacher_flat).pow(2).mean(1)
    else:
        raise ValueError(f"unknown consistency {kind!r}; choose kl or mse")
    return per_row.mean()


class TwoStreamBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size - labeled_batch_size`` unlabeled indices then ``labeled_batch_size`` labeled ones.

    One shuffled pass over the unlabeled indices per epoch (the last incomplete batch is dropped); the
    labeled indices are reshuffled and cycled as long as needed (docs/method.md#mean-teacher, GCDR's sampler).
    ``set_epoch`` reseeds the shuffle so a resumed run replays the same order.
    """

    def __init__(self, unlabeled_indices: Sequence[int], labeled_indices: Sequence[int], batch_size: int,
                 labeled_batch_size: int, seed: int = 0):
        if not 0 < labeled_batch_size < batch_size:
            raise ValueError(f"need 0 < labeled_batch_size ({labeled_batch_size}) < batch_size ({batch_size})")
        if not labeled_indices:
            raise ValueError("the mean teacher needs labeled samples")
        self.unlabeled = np.asarray(unlabeled_indices, dtype=np.int64)
        self.labeled = np.asarray(labeled_indices, dtype=np.int64)
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = batch_size - labeled_batch_size
        if len(self.unlabeled) < self.unlabeled_batch_size:
            raise ValueError(f"{len(self.unlabeled)} unlabeled samples cannot fill one batch of "
                             f"{self.unlabeled_batch_size}")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.unlabeled) // self.unlabeled_batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        unlabeled = rng.permutation(self.unlabeled)
        n_labeled = len(self) * self.labeled_batch_size
        labeled = np.concatenate([rng.permutation(self.labeled)
                                  for _ in range(-(-n_labeled // len(self.labeled)))])[:n_labeled]
        for b in range(len(self)):
            u = unlabeled[b * self.unlabeled_batch_size:(b + 1) * self.unlabeled_batch_size]
            lab = labeled[b * self.labeled_batch_size:(b + 1) * self.labeled_batch_size]
            yield [int(i) for i in u] + [int(i) for i in lab]
