"""`make bench`: how fast each stage runs on this machine, and where the time goes (gcdr_tools.bench.run).

    make bench [QUICK=1]
    python -m pipelines.bench [--quick] [--repeats 3] [--stages gradcam,refine,teacher,students] [--report BENCHMARKS.md]

Each row (each Grad-CAM loop, teacher size and STEPS, student variant) runs in its own fresh process, whose peak
memory is that row's alone. Results go to BENCHMARKS.md and <out_root>/bench/{bench.json,BENCHMARKS.md}.
``--quick`` runs tiny sizes once (the test suite uses it).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr_tools.bench.run import run_bench


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run (for the test suite)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default="gradcam,refine,teacher,students")
    parser.add_argument("--report", default="BENCHMARKS.md", help="markdown report path ('' = none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_bench(config_from_args(args), args.stages.split(","), quick=args.quick, repeats=args.repeats,
                     report=args.report)


if __name__ == "__main__":
    run_stage(main)
