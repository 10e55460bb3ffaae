"""Predict gaze heatmaps and points for any images with head boxes, and draw them.

    make predict CKPT=<student file> IMAGES=<image folder> HEADS=<head-box file(s) or folder>

Head-box files: one per person, rows ``<frame file>,<left>,<top>,<right>,<bottom>`` in pixels
(gcdr.data.headboxes; e.g. ../shared/data/vat-demo/person1.txt). Writes to --out (default
``<out_root>/predict/<checkpoint parent>-<stem>/``): one PNG per image (heatmap overlay of every person, head
boxes, a line from each head to its predicted gaze point) and ``predictions.csv`` (sample_id, image, person,
x_norm, y_norm, inout score). The work: gcdr/students/prediction.py.
"""

from __future__ import annotations

import argparse
import logging

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.students.prediction import predict_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--ckpt", required=True, help="student file (last.pt of train_student, model/, official)")
    parser.add_argument("--images", required=True, help="folder of images")
    parser.add_argument("--heads", required=True, nargs="+",
                        help="head-box file(s) (comma-separated or repeated) or a folder of them")
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--on-error", default="raise", choices=("raise", "skip"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    heads = [part for item in args.heads for part in item.split(",") if part]
    table = predict_stage(config_from_args(args), args.ckpt, args.images, heads, args.out, args.batch_size,
                          args.device, args.on_error)
    print(table.to_string(index=False, max_rows=20))


if __name__ == "__main__":
    run_stage(main)
