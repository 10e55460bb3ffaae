"""`make ablation`: seeds x label ratios x pseudo-label sources x students, with mean +- sd (gcdr_tools.ablation).

    make ablation [JOBS=2] [SET="ablation.seeds=[0] ablation.students=[gazelle,vat]"]

Writes <out_root>/ablation/{results.md, students.csv, quality.csv, results.png, ablation.log, logs/}; every stage
resumes, so a second call only adds what is missing (and `make demo`'s runs are reused: they are the same runs).
"""

from __future__ import annotations

import argparse

from gcdr.config import add_config_args
from gcdr.locking import run_stage
from gcdr_tools.ablation import run_ablation

__all__ = ["main", "run_ablation"]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--jobs", type=int, default=2, help="stages run side by side (default 2)")
    parser.add_argument("--report-only", action="store_true", help="write the tables from finished runs only")
    args = parser.parse_args(argv)
    return run_ablation(args.config, list(args.overrides), "ablation", args.jobs, args.report_only)


if __name__ == "__main__":
    run_stage(main)
