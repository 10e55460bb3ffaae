"""Several processes on one job (``accelerate launch`` / ``torchrun``), with or without GPUs."""

from __future__ import annotations

import os

import torch


def cpu_processes() -> bool:
    """True for a multi-process launch (torchrun / `accelerate launch --multi_gpu`) on a machine without CUDA:
    Accelerate then needs ``cpu=True`` to join the processes with gloo (else each one runs as rank 0 of 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
