"""Peak memory of one benchmark stage, measured in a fresh child process (used by ``make bench``).

A process' peak resident set size only ever grows, so stages measured one after the other in one process
all report the largest earlier stage again. ``run_in_fresh_process`` therefore runs each stage in a new
child process and reports that child's own figures:

    CPU   peak resident set size of the child (Linux: ``VmHWM`` of /proc/self/status; elsewhere
          ``ru_maxrss``), and its resident set size when the stage began (after imports, before the
          stage built anything); ``stage_mb`` = peak - start = the model, inputs, activations, optimizer
          state and the shared-library pages the stage touched.
    CUDA  ``torch.cuda.max_memory_allocated()`` of the child: tensors the stage allocated on the GPU (a
          fresh process starts from zero); the host figures are kept next to it.

Why not ``ru_maxrss`` on Linux: ``execve`` stores the peak of the process image it replaces in
``ru_maxrss``, so a child started by fork/vfork + exec (``spawn``) reports at least its parent's peak.
``VmHWM`` belongs to the current process image only.

Without CUDA, children come from a ``forkserver``: a server process imports torch and the stage modules
once (``preload``), then each child is a fork of it. Every child starts from the same state, none
inherits anything from the parent or from an earlier stage, and the seconds of importing
torch/transformers/diffusers are paid once rather than per stage. With CUDA (or without a forkserver on
the platform) children are ``spawn``ed, each importing what it needs: importing diffusers already asks
the CUDA driver for its devices, and a process forked after that cannot use CUDA.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import resource
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

PROC_STATUS = Path("/proc/self/status")


def peak_rss_mb() -> float:
    """Peak resident set size of this process image so far, in MiB (1 MiB = 2**20 bytes)."""
    if PROC_STATUS.exists():
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux/BSD


def start_method() -> str:
    """How children start: "forkserver" on a machine without CUDA where the platform has one, else "spawn"."""
    forkserver = "forkserver" in multiprocessing.get_all_start_methods() and not torch.cuda.is_available()
    return "forkserver" if forkserver else "spawn"


def _context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(start_method())


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` once in the forkserver, so that children start with them (call before the first run).

    Has no effect once the server runs (children then import what they need themselves) or under ``spawn``.
    """
    if start_method() == "forkserver":
        _context().set_forkserver_preload(["torch", *modules])


def _resolve(fn: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    if not name:
        raise ValueError(f"expected 'package.module:function', got {fn!r}")
    return getattr(importlib.import_module(module), name)


def _measure_in_child(fn: Callable[..., Any] | str, args: tuple, kwargs: dict[str, Any], repeats: int,
                      threads: int | None, log_level: int) -> tuple[list[Any], dict[str, Any]]:
    """Runs in the child: ``repeats`` calls of ``fn``, then this process' memory figures."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threads:
        torch.set_num_threads(threads)
    fn = _resolve(fn)  # imports its module (if not preloaded) before the start figure is taken
    start_mb = peak_rss_mb()  # a fresh process: its peak so far is its size after imports
    results = [fn(*args, **kwargs) for _ in range(repeats)]
    memory: dict[str, Any] = {"host_start_rss_mb": start_mb, "host_peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        memory.update(measures="cuda_max_memory_allocated", start_mb=0.0,
                      peak_mb=torch.cuda.max_memory_allocated() / 2**20)
    else:
        memory.update(measures="process_peak_rss", start_mb=start_mb, peak_mb=memory["host_peak_rss_mb"])
    memory["stage_mb"] = memory["peak_mb"] - memory["start_mb"]
    return results, memory


def run_in_fresh_process(fn: Callable[..., Any] | str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                         *, repeats: int = 1, threads: int | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Call ``fn(*args, **kwargs)`` ``repeats`` times in a new child process; return its results and memory.

    fn: a module-level function, or its name "package.module:function" (then this process need not import
        its module); the child imports it by name. args, kwargs and the results must pickle.
    threads: ``torch.set_num_threads`` in the child (default: torch's own default there).
    Returns (results, memory) with memory = {"measures": "process_peak_rss" | "cuda_max_memory_allocated",
    "peak_mb", "start_mb", "stage_mb" (= peak_mb - start_mb), "host_peak_rss_mb", "host_start_rss_mb"},
    all in MiB, measured over all ``repeats`` calls. Errors raised by ``fn`` are raised here.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as executor:
        future = executor.submit(_measure_in_child, fn, tuple(args), dict(kwargs or {}), repeats, threads,
                                 logging.getLogger().getEffectiveLevel())
        return future.result()
