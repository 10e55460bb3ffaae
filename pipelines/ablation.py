"""`make ablation`: seeds x label ratios x pseudo-label sources x students, with mean +- sd (gcdr_tools.ablation).

    make ablation [JOBS=2] [SET="ablation.seeds=[0] ablation.students=[gazelle,vat]"]

Writes <out_root>/ablation/{results.md, students.csv, quality.csv, results.png, ablation.log, logs/}; every stage
resumes, so a second call only adds what is missing (and `make demo`'s runs are reused: they are the same runs).
"""

from __future__ import annotations

import argparse
import logging
import time

from gcdr import paths
from gcdr.atomic import write_text_atomic
from gcdr.config import add_config_args, load_config, section
from gcdr.locking import run_stage
from gcdr.provenance import write_provenance
from gcdr_tools.ablation import (
    AblationConfig,
    plan_ablation,
    plot_ablation,
    quality_table,
    student_table,
    summary_markdown,
)
from gcdr_tools.stages import run_stages, stage_runner

log = logging.getLogger("gcdr.ablation")


def run_ablation(config: str, overrides: list[str], report: str = "ablation", jobs: int = 2,
                 report_only: bool = False) -> str:
    """Run (or resume) every stage of the ablation of ``config`` + ``overrides`` and write the report into
    <out_root>/<report>/; returns the markdown tables."""
    cfg = load_config(config, overrides)
    ablation = section(cfg, "ablation", AblationConfig)
    out = paths.out_root(cfg) / report
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / f"{report}.log")])
    plan = plan_ablation(cfg, ablation)
    start = time.perf_counter()
    timings = {} if report_only else run_stages(plan.stages, stage_runner(config, overrides, out / "logs", jobs),
                                                jobs)
    students, quality = student_table(plan), quality_table(cfg, plan)
    students.to_csv(out / "students.csv", index=False)
    quality.to_csv(out / "quality.csv", index=False)
    text = f"# GCDR {report} on {cfg.get('name')}\n\n" + summary_markdown(students, quality, ablation)
    write_text_atomic(out / "results.md", text)
    plot_ablation(out / "results.png", students, ablation)
    write_provenance(out, report, cfg, timings=timings, wall_s=round(time.perf_counter() - start, 1))
    print(text)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--jobs", type=int, default=2, help="stages run side by side (default 2)")
    parser.add_argument("--report-only", action="store_true", help="write the tables from finished runs only")
    args = parser.parse_args(argv)
    return run_ablation(args.config, list(args.overrides), "ablation", args.jobs, args.report_only)


if __name__ == "__main__":
    run_stage(main)
