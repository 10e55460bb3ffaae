"""`make demo`: the whole GCDR pipeline on SynthGaze, offline on a CPU, ending with the paper's ablation.

Stages (each one resumes / skips finished work, so a second `make demo` reuses what is done):
  data-synth -> split (10 %) -> synth-vqa -> gradcam (unlabeled) -> train-teacher
  -> refine: none (raw Grad-CAM), argmax, GCDR at T in {100, 250, 400}
  -> pseudo-label quality on the unlabeled split (SynthGaze knows the truth)
  -> the same student, budget and seed trained on: labeled only, + raw Grad-CAM, + argmax, + GCDR T=250,
     and full supervision (RATIO=1.0)
Independent stages run side by side (``--jobs``, default 2: each stage uses one CPU thread, so two stages fill
a 2-core machine); each stage's own output goes to <out_root>/demo/logs/<stage>.log.
Outputs in <out_root>/demo/: results.md, results.csv, results.png, demo.log, logs/.
"""

from __future__ import annotations

import argparse
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

from gcdr import paths
from gcdr.config import add_config_args, config_from_args
from gcdr.demo_report import pseudo_label_quality, write_results

log = logging.getLogger("gcdr.demo")

REFINE_TS = (100, 250, 400)
STUDENT_T = 250

# A few persons and one epoch per stage: proves every stage connects (used by the test suite).
SMOKE_OVERRIDES = [
    "synth.train_persons=60", "synth.test_persons=12", "split.ratio=0.25",
    "synth_vqa.persons=48", "synth_vqa.epochs=1", "gradcam.previews=2", "refine.previews=2",
    "teacher.epochs=1", "teacher.val_max_persons=4", "student.epochs=1", "student.steps_per_epoch=2",
    "student.batch_size=8", "student.labeled_per_batch=2",
]


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
            raise ValueError(f"demo stage {stage.name!r} waits for {unknown}: not an earlier stage")
    pending, running, done = list(stages), {}, set()
    timings: dict[str, float] = {}
    failure: tuple[str, BaseException] | None = None

    def timed(stage: Stage) -> float:
        start = time.perf_counter()
        run(stage)
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(stages), desc="demo", unit="stage") as bar:
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
        raise RuntimeError(f"demo stage {failure[0]!r} failed: {failure[1]}") from failure[1]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--smoke", action="store_true", help="a few persons, one epoch each (CI check)")
    parser.add_argument("--jobs", type=int, default=2, help="stages run side by side (default 2)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.smoke:
        overrides = SMOKE_OVERRIDES + overrides
        if not any(o.startswith("out_root=") for o in overrides):
            overrides.append("out_root=outputs/demo-smoke")
        if not any(o.startswith("dataset.root=") for o in overrides):
            overrides += ["dataset.root=outputs/demo-smoke/data", "split.dir=outputs/demo-smoke/data/splits",
                          "vqa.model=outputs/demo-smoke/synth_vqa"]
    args.overrides = overrides
    cfg = config_from_args(args)
    demo_dir = paths.out_root(cfg) / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(demo_dir / "demo.log")])

    gradcam = str(paths.gradcam_dir(cfg, "unlabeled"))
    pseudo_dirs = {"Grad-CAM (raw)": paths.refined_dir(cfg, "none", 0, "unlabeled"),
                   "argmax Gaussian": paths.refined_dir(cfg, "argmax", 0, "unlabeled")}
    pseudo_dirs.update({f"GCDR T={T}": paths.refined_dir(cfg, "gcdr", T, "unlabeled") for T in REFINE_TS})
    student_sources = {  # label -> (pseudo-label folder or "none", the refine stage it waits for, split ratio)
        "labeled only": ("none", "split", None),
        "+ Grad-CAM (raw)": (pseudo_dirs["Grad-CAM (raw)"], "refine none", None),
        "+ argmax Gaussian": (pseudo_dirs["argmax Gaussian"], "refine argmax", None),
        f"+ GCDR T={STUDENT_T}": (pseudo_dirs[f"GCDR T={STUDENT_T}"], f"refine T={STUDENT_T}", None),
        "full supervision": ("none", "split 1.0", 1.0),
    }

    def student(label: str) -> Stage:
        pseudo, after, ratio = student_sources[label]
        return Stage(f"student {label}", "train_student", (after,),
                     [f"split.ratio={ratio}"] if ratio else [], ["--pseudo", str(pseudo)])

    def refine(method: str, T: int = 0) -> Stage:
        if method == "gcdr":  # only the diffusion refinement needs the teacher
            return Stage(f"refine T={T}", "refine", ("gradcam", "train-teacher"),
                         [f"refine.method={method}", f"refine.T={T}"], ["--src", gradcam])
        return Stage(f"refine {method}", "refine", ("gradcam",), [f"refine.method={method}"], ["--src", gradcam])

    # Critical path first: synth-vqa -> gradcam -> refine T=250 -> its student; the rest fills the other slot.
    stages = [
        Stage("data-synth", "data_synth"),
        Stage("synth-vqa", "synth_vqa", ("data-synth",)),
        Stage("split", "split", ("data-synth",)),
        Stage("train-teacher", "train_teacher", ("split",)),
        Stage("gradcam", "gradcam", ("split", "synth-vqa"), ["gradcam.split=unlabeled"]),
        refine("gcdr", STUDENT_T),
        student(f"+ GCDR T={STUDENT_T}"),
        refine("none"),
        refine("argmax"),
        student("labeled only"),
        Stage("split 1.0", "split", ("data-synth",), ["split.ratio=1.0"]),
        student("full supervision"),
        student("+ Grad-CAM (raw)"),
        student("+ argmax Gaussian"),
        *(refine("gcdr", T) for T in REFINE_TS if T != STUDENT_T),
    ]
    start = time.perf_counter()
    timings = run_stages(stages, stage_runner(args.config, overrides, demo_dir / "logs", args.jobs), args.jobs)

    quality_start = time.perf_counter()
    quality = pseudo_label_quality(cfg, pseudo_dirs)
    timings["pseudo-label quality"] = time.perf_counter() - quality_start
    student_dirs = {}
    for label, (pseudo, _, ratio) in student_sources.items():
        student_cfg = dict(cfg, split=dict(cfg["split"], **({"ratio": ratio} if ratio else {})))
        student_dirs[label] = paths.student_dir(student_cfg, cfg["student"]["model"], str(pseudo))
    write_results(demo_dir, quality, student_dirs, timings, cfg, wall_s=time.perf_counter() - start)


if __name__ == "__main__":
    main()
