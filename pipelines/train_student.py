"""Stage 3: train a student (VAT, Gaze-LLE, any of gcdr.students.registry) on labeled + pseudo-labeled persons.

    make train-student RATIO=0.1 STUDENT=vat|gazelle PSEUDO=<pseudo-label folder>|none

PSEUDO=none trains on the labeled persons only; RATIO=1.0 = every train person labeled. Writes last.pt,
history.csv, tb/, model/ (config.json + model.safetensors) and metrics.json (last) to gcdr.paths.student_dir
or --out. A run resumes from last.pt at the epoch it reached and a finished one is left alone; a folder of
another request (other settings, another version of the pseudo-label folder) is refused: --restart replaces it.
Several processes, mixed precision: ``accelerate launch ... -m pipelines.train_student``. The loop and what
it writes: gcdr/students/train.py.
"""

from __future__ import annotations

import argparse
import logging

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.stage_output import add_restart_arg
from gcdr.students.train import train_student

BUDGET_OPTIONS = ("epochs", "max_steps", "steps_per_epoch")  # --epochs N = --set student.epochs=N


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--pseudo", default="none", help="pseudo-label folder, or none = labeled persons only")
    parser.add_argument("--out", default=None, help="output folder (default: gcdr.paths.student_dir)")
    for option in BUDGET_OPTIONS:
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=None, help=f"override student.{option}")
    add_restart_arg(parser)
    args = parser.parse_args(argv)
    args.overrides += [f"student.{o}={getattr(args, o)}" for o in BUDGET_OPTIONS if getattr(args, o) is not None]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_student(config_from_args(args), args.pseudo, args.out, args.restart)


if __name__ == "__main__":
    run_stage(main)
