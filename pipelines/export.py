"""Export a student checkpoint in the ecosystem's format.

    make export CKPT=outputs/gazefollow/students/<run>/last.pt OUT=<file>

``--format official``: a Gaze-LLE student becomes gazelle's decoder state dict (the ``gazelle_dinov2_vitb14.pt``
layout, read by gazelle's ``load_gazelle_state_dict``); a ResNet-50 VAT student becomes VAT's
``{'model': ModelSpatial state}`` (the ``model_gazefollow.pt`` layout). Such files load back through
``make eval`` / ``make predict`` (gcdr.students.training.load_student). Details: gcdr/students/export.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gcdr.locking import run_stage
from gcdr.students.export import FORMATS, export_official


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="student checkpoint (last.pt of train_student)")
    parser.add_argument("--format", default="official", choices=FORMATS, help="official: VAT / gazelle layout")
    parser.add_argument("--out", default=None, help="output file (default: <ckpt stem>.official.pt next to it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise SystemExit(f"checkpoint not found: {ckpt}")
    out = Path(args.out) if args.out else ckpt.with_name(f"{ckpt.stem}.official.pt")
    try:
        model = export_official(ckpt, out)
    except ValueError as error:
        raise SystemExit(f"cannot export {ckpt}: {error}") from None
    print(f"{out} ({model}, {args.format} format)")


if __name__ == "__main__":
    run_stage(main)
