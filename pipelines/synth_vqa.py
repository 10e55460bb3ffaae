"""`make synth-vqa`: train the small SynthGaze VQA model (BLIP architecture, from scratch) into ``vqa.model``.

    python -m pipelines.synth_vqa --config configs/synthgaze.yaml [--set synth_vqa.epochs=4] [--force]

It stands in for the pretrained BLIP VQA model offline (see gcdr_tools/synth_vqa.py for which persons it learns
from). Skips the work when ``vqa.model`` already holds a model trained with the same ``synth:``, ``synth_vqa:``
and ``vqa:`` settings. Writes model + processor (save_pretrained), metrics.json (test accuracy) and provenance.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.provenance import PROVENANCE_FILE
from gcdr_tools.synth_vqa import METRICS_FILE, train_synth_vqa

log = logging.getLogger("pipelines.synth_vqa")
SETTINGS = ("synth", "synth_vqa", "vqa", "dataset", "split")


def _same_settings(model_dir: Path, cfg: dict) -> bool:
    """True when ``model_dir`` holds a finished model trained with the same settings."""
    provenance = model_dir / PROVENANCE_FILE
    if not (model_dir / METRICS_FILE).is_file() or not provenance.is_file():
        return False
    previous = json.loads(provenance.read_text()).get("config", {})
    return all(previous.get(key) == cfg.get(key) for key in SETTINGS)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--force", action="store_true", help="retrain even if the same model already exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    model_dir = Path(cfg["vqa"]["model"])
    if not args.force and _same_settings(model_dir, cfg):
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
        log.info("SynthGaze VQA model in %s is up to date (test accuracy %.3f); use --force to retrain",
                 model_dir, metrics["test_accuracy"])
        return metrics
    return train_synth_vqa(cfg, progress=not args.no_progress)


if __name__ == "__main__":
    run_stage(main)
