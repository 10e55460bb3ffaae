"""`make demo`: the whole GCDR pipeline on SynthGaze, offline on a CPU: one seed and one label ratio of
`make ablation` (the same runs, so a later `make ablation` reuses them).

    data-synth -> synth-vqa (the stand-in VQA, pretrained on an independent draw) -> Grad-CAM of every train
    person -> raw / argmax pseudo-labels -> split (10 %) -> diffusion teacher -> GCDR refinement at T = 100,
    250, 400 -> students on: labeled only, + raw Grad-CAM, + argmax, + GCDR at T = 400, full supervision
    -> pseudo-label quality (every T) and student tables, and a figure.

Independent stages run side by side (``--jobs``, default 2); each stage's output goes to
<out_root>/demo/logs/<stage>.log. Outputs in <out_root>/demo/: results.md, students.csv, quality.csv,
results.png, demo.log, logs/. ``--smoke``: a few persons and a few steps per stage (the test suite's check).
"""

from __future__ import annotations

import argparse

from gcdr.config import add_config_args
from gcdr.locking import run_stage
from pipelines.ablation import run_ablation

# the extra baselines (direct mapping, self-training: a teacher and two students more), the teacher-alone control
# (T = 500) and the students of the other Ts (their pseudo-labels are scored) stay in `make ablation`, to keep the
# demo within 20 minutes on 2 cores (measured on a fresh clone, 2026-12-05: 16 min 18 s, install included; the
# 720-step teacher is 9 of them)
DEMO_OVERRIDES = ["ablation.seeds=[0]", "ablation.ratios=[0.1]", "ablation.sweep_ratio=0.1",
                  "ablation.extra_sources=[]", "ablation.sweep_students=false", "ablation.ts=[100,250,400]"]

# A few persons and steps per stage: proves every stage connects (used by the test suite).
SMOKE_OVERRIDES = [
    "synth.train_persons=60", "synth.test_persons=12", "ablation.ratios=[0.25]", "ablation.sweep_ratio=0.25",
    "ablation.ts=[250]", "ablation.extra_sources=[direct mapping, self-training]",
    "synth_vqa.persons=48", "synth_vqa.epochs=1", "gradcam.previews=2", "refine.previews=2",
    "teacher.epochs=1", "teacher.val_max_persons=4", "ablation.main_T=250",
    # the teacher of the recorded reference (tests/fixtures/smoke_demo_reference.json), older than today's defaults
    "teacher.train_steps=null", "teacher.input_size=224", "teacher.layers_per_block=2", "teacher.val_split=test",
    "ablation.student_overrides={gazelle: [student.gazelle_dim=16, student.gazelle_layers=1, student.epochs=1, "
    "student.steps_per_epoch=2, student.batch_size=8, student.labeled_per_batch=2]}",
]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--smoke", action="store_true", help="a few persons and steps per stage (CI check)")
    parser.add_argument("--jobs", type=int, default=2, help="stages run side by side (default 2)")
    args = parser.parse_args(argv)
    overrides = DEMO_OVERRIDES + list(args.overrides)
    if args.smoke:
        overrides = DEMO_OVERRIDES + SMOKE_OVERRIDES
        if not any(o.startswith("out_root=") for o in args.overrides):
            overrides += ["out_root=outputs/demo-smoke", "dataset.root=outputs/demo-smoke/data",
                          "split.dir=outputs/demo-smoke/data/splits", "vqa.model=outputs/demo-smoke/synth_vqa"]
        overrides += list(args.overrides)
    return run_ablation(args.config, overrides, "demo", args.jobs)


if __name__ == "__main__":
    run_stage(main)
