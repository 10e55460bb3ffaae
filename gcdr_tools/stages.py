"""Stages run as separate processes (as `make <stage>` runs them), side by side where they do not wait for each
other: the scheduler of `make demo` and `make ablation`."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("gcdr.stages")


@dataclass
class Stage:
    """One `python -m pipelines.<module>` run of the demo and the stages it waits for."""

    name: str
    module: str
    after: tuple[str, ...] = ()
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE on top of the demo's own
    extra: list[str] = field(default_factory=list)      # further command-line arguments


def run_stages(stages: list[Stage], run: Callable[[Stage], None], jobs: int = 2) -> dict[str, float]:
    """Run ``stages`` with up to ``jobs`` at a time, each once all of its ``after`` stages finished.

    Among the ready stages, the list order decides (put the critical path first). When a stage fails, no new
    stage starts, the running ones finish, and the error is raised naming the stage. Returns wall seconds per stage.
    """
    names = [s.name for s in stages]
    for stage in stages:
        unknown = [a for a in stage.after if a not in names or names.index(a) >= names.index(stage.name)]
        if unknown:
            raise ValueError(f"stage {stage.name!r} waits for {unknown}: not an earlier stage")
    pending, running, done = list(stages), {}, set()
    timings: dict[str, float] = {}
    failure: tuple[str, BaseException] | None = None

    def timed(stage: Stage) -> float:
        start = time.perf_counter()
        run(stage)
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(stages), desc="stages", unit="stage") as bar:
        while (pending and failure is None) or running:
            for stage in [s for s in pending if set(s.after) <= done][:max(0, jobs - len(running))]:
                if failure is not None:
                    break
                pending.remove(stage)
                running[pool.submit(timed, stage)] = stage
                log.info("[%s] started", stage.name)
            bar.set_postfix_str(", ".join(s.name for s in running.values()))
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                if future.exception() is not None:
                    failure = failure or (stage.name, future.exception())
                    log.error("[%s] failed: %s", stage.name, future.exception())
                    continue
                timings[stage.name] = future.result()
                done.add(stage.name)
                bar.update()
                log.info("[%s] done in %.1f s", stage.name, timings[stage.name])
    if failure is not None:
        raise RuntimeError(f"stage {failure[0]!r} failed: {failure[1]}") from failure[1]
    return timings


def stage_runner(config: str, overrides: list[str], log_dir: Path, jobs: int) -> Callable[[Stage], None]:
    """Run a stage as its own process (as `make <stage>` does), its output into ``log_dir/<stage>.log``.

    Each process gets cpu_count / jobs threads (OMP_NUM_THREADS, which torch follows): stages side by side
    on all threads each would slow each other down several-fold.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))

    def run(stage: Stage) -> None:
        cmd = [sys.executable, "-m", f"pipelines.{stage.module}", "--config", config]
        for item in overrides + stage.overrides:
            cmd += ["--set", item]
        cmd += stage.extra
        log_path = log_dir / (re.sub(r"[^A-Za-z0-9.=_-]+", "_", stage.name).strip("_") + ".log")
        log.info("[%s] %s > %s", stage.name, " ".join(cmd), log_path)
        with open(log_path, "w") as log_file:
            result = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        if result.returncode != 0:
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-20:])
            raise RuntimeError(f"exit code {result.returncode}; last lines of {log_path}:\n{tail}")

    return run
