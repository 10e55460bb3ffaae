"""Evaluate a student checkpoint on the test split of the configured dataset.

    make eval CKPT=outputs/synthgaze/students/vat-r0.1-none/last.pt [CONFIG=...]

The checkpoint stores its model config, so it rebuilds itself (VAT or Gaze-LLE; a Gaze-LLE checkpoint
names its DINOv2 backbone, which must be reachable). Prints the metric table (gcdr.metrics.evaluate) and
writes it as JSON next to the checkpoint (``<ckpt stem>.test_metrics.json``) or to --out.

Unreadable test images (missing, empty, undecodable): ``dataset.on_error: raise`` stops with an
ImageReadError naming the file; ``skip`` leaves their persons out before prediction (no person is ever scored
on another person's image) and counts them in ``n_skipped`` / ``n_unreadable``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from gcdr.atomic import write_json_atomic
from gcdr.config import add_config_args, config_from_args
from gcdr.data import load_samples
from gcdr.locking import run_stage
from gcdr.metrics import evaluate
from gcdr.provenance import provenance
from gcdr.students.training import (
    configured_gazelle_backbone,
    dataset_for_student,
    load_student,
    predict_dataset,
)

log = logging.getLogger("gcdr.evaluate")

PROTOCOLS = ("auto", "gcdr", "vat", "gazelle")


def evaluate_checkpoint(cfg: dict[str, Any], ckpt: str | Path, protocol: str = "auto", batch_size: int = 32,
                        device: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """Metrics of checkpoint ``ckpt`` on ``load_samples(cfg, "test")``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, checkpoint = load_student(ckpt, backbone=configured_gazelle_backbone(cfg))
    config = checkpoint["model_config"]
    dataset_cfg = cfg.get("dataset") or {}
    dataset_format = dataset_cfg.get("format", "gazefollow")
    if protocol == "auto":
        protocol = "gazelle" if config["model"] == "gazelle" else "gcdr"
    on_error = dataset_cfg.get("on_error", "raise")
    dataset = dataset_for_student(load_samples(cfg, "test"), config, on_error, dataset_format)
    if on_error == "skip":
        dataset.drop_unreadable()  # else the dataset would put another person's image in their place
    heatmaps, inout = predict_dataset(model, dataset, batch_size, device, num_workers)
    # an image that became unreadable since (seen only with num_workers=0) is left out too, never scored
    read = [i for i in range(len(dataset)) if i not in dataset.unreadable]
    samples = [dataset.sample(i) for i in read]
    scores = inout[read] if inout is not None and dataset_format == "videoattentiontarget" else None
    metrics = evaluate(heatmaps[read], samples, inout_scores=scores, dataset=dataset_format, protocol=protocol,
                       unreadable=len(dataset.skipped) + len(dataset) - len(read))
    return {"metrics": metrics, "protocol": protocol, "dataset": dataset_format, "checkpoint": str(ckpt),
            "model_config": config, "checkpoint_epoch": checkpoint.get("epoch")}


def format_table(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("auc", "avg_l2", "min_l2", "ap", "n", "n_skipped", "n_unreadable") if k in metrics]
    header = "| " + " | ".join(keys) + " |"
    rule = "|" + "|".join("---" for _ in keys) + "|"
    values = "| " + " | ".join(f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k])
                               for k in keys) + " |"
    return "\n".join([header, rule, values])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--ckpt", required=True, help="student checkpoint (last.pt of train_student)")
    parser.add_argument("--out", default=None, help="JSON file (default: next to the checkpoint)")
    parser.add_argument("--protocol", default="auto", choices=PROTOCOLS,
                        help="metric protocol (auto: gcdr for VAT, gazelle for Gaze-LLE)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise SystemExit(f"checkpoint not found: {ckpt}")
    result = evaluate_checkpoint(cfg, ckpt, args.protocol, args.batch_size, args.device, args.num_workers)
    out = Path(args.out) if args.out else ckpt.with_name(f"{ckpt.stem}.test_metrics.json")
    write_json_atomic(out, {**result, "provenance": provenance("evaluate", cfg)})
    print(format_table(result["metrics"]))
    log.info("wrote %s", out)


if __name__ == "__main__":
    run_stage(main)
