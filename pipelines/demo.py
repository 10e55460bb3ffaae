"""`make demo`: the whole GCDR pipeline on SynthGaze, offline on a CPU, ending with the paper's ablation.

Stages (each one resumes / skips finished work, so a second `make demo` reuses what is done):
  data-synth -> split (10 %) -> synth-vqa -> gradcam (unlabeled) -> train-teacher
  -> refine: none (raw Grad-CAM), argmax, GCDR at T in {100, 250, 400}
  -> pseudo-label quality on the unlabeled split (SynthGaze knows the truth)
  -> the same student, budget and seed trained on: labeled only, + raw Grad-CAM, + argmax, + GCDR T=250,
     and full supervision (RATIO=1.0)
Outputs in <out_root>/demo/: results.md, results.csv, results.png, demo.log.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

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
    "student.batch_size=8",
]


def run_stage(name: str, module: str, config: str, overrides: list[str], extra: list[str], timings: dict) -> None:
    """Run `python -m pipelines.<module>` as its own process (as `make <stage>` does) and time it."""
    cmd = [sys.executable, "-m", f"pipelines.{module}", "--config", config]
    for item in overrides:
        cmd += ["--set", item]
    cmd += extra
    log.info("[%s] %s", name, " ".join(cmd))
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    timings[name] = time.perf_counter() - start
    log.info("[%s] done in %.1f s", name, timings[name])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--smoke", action="store_true", help="a few persons, one epoch each (CI check)")
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
    timings: dict[str, float] = {}
    stage = lambda name, module, extra=(), more=(): run_stage(  # noqa: E731
        name, module, args.config, overrides + list(more), list(extra), timings)

    stage("data-synth", "data_synth")
    stage("split", "split")
    stage("synth-vqa", "synth_vqa")
    stage("gradcam", "gradcam", more=["gradcam.split=unlabeled"])
    stage("train-teacher", "train_teacher")
    gradcam_dir = paths.gradcam_dir(cfg, "unlabeled")
    pseudo_dirs = {"Grad-CAM (raw)": paths.refined_dir(cfg, "none", 0, "unlabeled"),
                   "argmax Gaussian": paths.refined_dir(cfg, "argmax", 0, "unlabeled")}
    stage("refine none", "refine", ["--src", str(gradcam_dir)], ["refine.method=none"])
    stage("refine argmax", "refine", ["--src", str(gradcam_dir)], ["refine.method=argmax"])
    for T in REFINE_TS:
        stage(f"refine T={T}", "refine", ["--src", str(gradcam_dir)], ["refine.method=gcdr", f"refine.T={T}"])
        pseudo_dirs[f"GCDR T={T}"] = paths.refined_dir(cfg, "gcdr", T, "unlabeled")

    start = time.perf_counter()
    quality = pseudo_label_quality(cfg, pseudo_dirs)
    timings["pseudo-label quality"] = time.perf_counter() - start

    students = {
        "labeled only": ("none", []),
        "+ Grad-CAM (raw)": (pseudo_dirs["Grad-CAM (raw)"], []),
        "+ argmax Gaussian": (pseudo_dirs["argmax Gaussian"], []),
        f"+ GCDR T={STUDENT_T}": (pseudo_dirs[f"GCDR T={STUDENT_T}"], []),
        "full supervision": ("none", ["split.ratio=1.0"]),
    }
    student_dirs = {}
    for label, (pseudo, more) in students.items():
        if "split.ratio=1.0" in more:
            stage("split 1.0", "split", more=more)
        stage(f"student {label}", "train_student", ["--pseudo", str(pseudo)], more)
        student_cfg = dict(cfg, split=dict(cfg["split"], **({"ratio": 1.0} if more else {})))
        student_dirs[label] = paths.student_dir(student_cfg, cfg["student"]["model"], str(pseudo))

    write_results(demo_dir, quality, student_dirs, timings, cfg)


if __name__ == "__main__":
    main()
