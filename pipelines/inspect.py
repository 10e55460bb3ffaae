"""`make inspect PSEUDO=<folder> [VS="<folder> <folder>"]`: look at pseudo-labels by eye.

Writes into <PSEUDO>/inspect/ (or --out): index.html (opens from disk, no server, no network), thumbs/,
contact_sheet.png, summary.json, provenance.json. The first folder defines the persons; every --vs folder
adds a heatmap column. Ground truth (points, body boxes, errors) comes from the dataset split that holds
the sample ids (tried in the order unlabeled, labeled, test, train); without one the gallery has no errors.

Examples:
  python -m pipelines.inspect --pseudo outputs/synthgaze/pseudo/gradcam-unlabeled \\
      --vs outputs/synthgaze/pseudo/argmax-unlabeled --vs outputs/synthgaze/pseudo/gcdr-T250-unlabeled
  python -m pipelines.inspect --pseudo <folder> --all --sort invalid
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from gcdr.config import add_config_args, config_from_args, section
from gcdr.locking import run_stage
from gcdr.pseudolabels import PseudoLabelFolder
from gcdr_tools.gallery import (
    GROUND_TRUTH_SPLITS,
    SORT_ORDERS,
    InspectConfig,
    build_gallery,
    ground_truth_samples,
)

log = logging.getLogger("gcdr.inspect")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--pseudo", required=True, help="the pseudo-label folder to inspect (its persons are shown)")
    parser.add_argument("--vs", action="append", default=[], metavar="FOLDER",
                        help="another pseudo-label folder to show side by side (repeatable)")
    parser.add_argument("--out", default=None, help="output folder (default: <pseudo>/inspect)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--max-persons", type=int, default=None,
                      help="show a seeded random sample of at most N persons (config inspect.max_persons)")
    size.add_argument("--all", action="store_true", help="show every person")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sample and of the random order")
    parser.add_argument("--sort", choices=SORT_ORDERS, default=None,
                        help="initial order of the page and of the contact sheet (default: worst L2 first)")
    parser.add_argument("--per-page", type=int, default=None, help="persons per HTML page")
    parser.add_argument("--thumb-px", type=int, default=None, help="longer side of each tile, pixels")
    parser.add_argument("--contact-sheet", type=int, default=None, metavar="K",
                        help="persons on the contact sheet (the first K of the order)")
    parser.add_argument("--gt-split", action="append", default=None, choices=GROUND_TRUTH_SPLITS,
                        help=f"split(s) to take ground truth from (default: try {', '.join(GROUND_TRUTH_SPLITS)})")
    parser.add_argument("--no-gt", action="store_true", help="do not look for ground truth")
    parser.add_argument("--no-auc", action="store_true", help="skip the AUC (avg L2 is always computed)")
    return parser.parse_args(argv)


def inspect_config(cfg: dict, args: argparse.Namespace) -> InspectConfig:
    """The config section ``inspect`` with the command-line options on top."""
    config = section(cfg, "inspect", InspectConfig)
    overrides = {
        "max_persons": 0 if args.all else args.max_persons, "seed": args.seed, "sort": args.sort,
        "per_page": args.per_page, "thumb_px": args.thumb_px, "contact_sheet_persons": args.contact_sheet,
        "auc": False if args.no_auc else None,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    cfg = config_from_args(args)
    config = inspect_config(cfg, args)
    folders = [args.pseudo, *args.vs]
    samples, ground_truth_note = [], "not looked up (--no-gt)"
    if not args.no_gt:
        ids = PseudoLabelFolder(args.pseudo).sample_ids
        found, used = ground_truth_samples(cfg, ids, args.gt_split or GROUND_TRUTH_SPLITS)
        samples = list(found.values())
        ground_truth_note = (f"{len(found):,} of {len(ids):,} persons of the first folder matched in "
                             + ", ".join(used)) if found else "none found in the dataset splits"
    dataset_format = (cfg.get("dataset") or {}).get("format", "gazefollow")
    dataset = "videoattentiontarget" if dataset_format == "videoattentiontarget" else "gazefollow"
    summary = build_gallery(folders, args.out, samples, config, dataset=dataset,
                            ground_truth_note=ground_truth_note, run_config=cfg)
    log.info("open %s (contact sheet %s)", summary["index_html"], summary["contact_sheet"])
    return summary


if __name__ == "__main__":
    run_stage(main)
