"""Evaluate a student on the test split of the configured dataset.

    make eval CKPT=outputs/synthgaze/students/vat-r0.1-none/last.pt [CONFIG=...]

CKPT: any student file (last.pt, a model/ directory, an official VAT / Gaze-LLE file; gcdr.students.export);
it rebuilds itself (a Gaze-LLE student names its backbone, which must be reachable). Prints the metric table
(gcdr.metrics.evaluate) and writes it as JSON next to the checkpoint (``<ckpt stem>.test_metrics.json``) or
to --out. ``dataset.on_error: skip`` leaves persons with unreadable images out and counts them
(gcdr/students/evaluation.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gcdr.atomic import write_json_atomic
from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.metrics import PROTOCOLS
from gcdr.provenance import provenance
from gcdr.students.evaluation import evaluate_checkpoint, format_table

log = logging.getLogger("gcdr.evaluate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--ckpt", required=True, help="student file (last.pt of train_student, model/, official)")
    parser.add_argument("--out", default=None, help="JSON file (default: next to the checkpoint)")
    parser.add_argument("--protocol", default="auto", choices=("auto", *PROTOCOLS),
                        help="metric protocol (auto: the student's own, gcdr for VAT, gazelle for Gaze-LLE)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    ckpt = Path(args.ckpt)
    if not ckpt.exists():
        raise SystemExit(f"checkpoint not found: {ckpt}")
    result = evaluate_checkpoint(cfg, ckpt, args.protocol, args.batch_size, args.device, args.num_workers)
    out = Path(args.out) if args.out else ckpt.with_name(f"{ckpt.stem}.test_metrics.json")
    write_json_atomic(out, {**result, "provenance": provenance("evaluate", cfg)})
    print(format_table(result["metrics"]))
    log.info("wrote %s", out)


if __name__ == "__main__":
    run_stage(main)
