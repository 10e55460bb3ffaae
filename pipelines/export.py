"""Export a student in another format.

    make export CKPT=outputs/gazefollow/students/<run>/last.pt OUT=<file>
    python -m pipelines.export --format gcdr --ckpt <old .pt> --out <model directory>

``--format official``: a Gaze-LLE student becomes gazelle's decoder state dict (the ``gazelle_dinov2_vitb14.pt``
layout, read by gazelle's ``load_gazelle_state_dict``); a ResNet-50 VAT student becomes VAT's
``{'model': ModelSpatial state}`` (the ``model_gazefollow.pt`` layout). ``--format gcdr``: any student file
(an earlier gcdr ``.pt``, an official file) becomes a model directory (config.json + model.safetensors, what
train-student now writes as ``model/``). Every format loads back through ``make eval`` / ``make predict``
(gcdr.students.export.load_student). Details: gcdr/students/export.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gcdr.locking import run_stage
from gcdr.students.export import FORMATS, convert_checkpoint, export_official

DEFAULT_OUT = {"official": "{stem}.official.pt", "gcdr": "{stem}.model"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="student file (last.pt of train_student, model/, official)")
    parser.add_argument("--format", default="official", choices=FORMATS,
                        help="official: VAT / gazelle layout; gcdr: a model directory")
    parser.add_argument("--backbone", default=None, help="gcdr format of an official Gaze-LLE file: its backbone")
    parser.add_argument("--out", default=None, help="output (default: <ckpt stem>.official.pt / .model next to it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ckpt = Path(args.ckpt)
    if not ckpt.exists():
        raise SystemExit(f"checkpoint not found: {ckpt}")
    out = Path(args.out) if args.out else ckpt.with_name(DEFAULT_OUT[args.format].format(stem=ckpt.stem))
    try:
        if args.format == "gcdr":
            name = convert_checkpoint(ckpt, out, args.backbone)
        else:
            name = export_official(ckpt, out)
    except ValueError as error:
        raise SystemExit(f"cannot export {ckpt}: {error}") from None
    print(f"{out} ({name}, {args.format} format)")


if __name__ == "__main__":
    run_stage(main)
