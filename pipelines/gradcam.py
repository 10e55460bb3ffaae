"""Stage 1 (`make gradcam`): BLIP VQA Grad-CAM pseudo-labels for one split.

    python -m pipelines.gradcam --config configs/synthgaze.yaml [--set gradcam.split=unlabeled] [--per-person]
    accelerate launch --num_processes 2 -m pipelines.gradcam ...      (NPROC=2 make gradcam; GPUs)
    torchrun --nproc_per_node 2 -m pipelines.gradcam ...              (several CPU processes)

For every person of ``gradcam.split``: draw the person's box in green, ask ``vqa.question``, take the answer's
key noun and store the Grad-CAM of its token (``gradcam.method`` / ``layer`` / ``target``) in the pseudo-label
folder ``<out_root>/pseudo/gradcam-<split>/`` (raw patch-grid maps + normalised 64x64 maps + manifest with
answer, key noun and validity). Resumable: persons already in the folder are skipped. With several processes
each writes its own shard (``rank<i>``) and the main process merges the manifest at the end. The main process
locks the folder for the run (gcdr.locking: a second run on it is refused; a killed run's temporary files are
removed); the folder is final once summary.json is written (what refine checks).
"""

from __future__ import annotations

import argparse
import logging
import math

from gcdr import paths
from gcdr.config import add_config_args, config_from_args, section
from gcdr.locking import folder_lock, run_stage
from gcdr.provenance import write_provenance
from gcdr.pseudolabels import PseudoLabelWriter, finalize
from gcdr.vqa.annotate import gradcam_pseudolabels
from gcdr.vqa.blip import VqaConfig, load_vqa
from gcdr.vqa.gradcam import GradcamConfig, VqaGradcam

log = logging.getLogger("pipelines.gradcam")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--per-person", action="store_true",
                        help="one person per forward/backward (the reference path; slower)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N persons of the split")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch
    from accelerate import PartialState

    from gcdr.data import load_samples

    cfg = config_from_args(args)
    vqa_cfg = section(cfg, "vqa", VqaConfig)
    cam_cfg = section(cfg, "gradcam", GradcamConfig)
    on_error = (cfg.get("dataset") or {}).get("on_error", "raise")
    # on a machine without GPUs, several processes (accelerate launch / torchrun) still split the work (gloo)
    state = PartialState(cpu=vqa_cfg.device == "cpu" or not torch.cuda.is_available())
    out_dir = paths.gradcam_dir(cfg, cam_cfg.split)
    samples = load_samples(cfg, cam_cfg.split)[: args.limit]
    details = dict(model=vqa_cfg.model, method=cam_cfg.method, layer=cam_cfg.layer, target=cam_cfg.target,
                   question=vqa_cfg.question, split=cam_cfg.split, persons=len(samples))
    with folder_lock(out_dir, enabled=state.is_main_process):  # held by the main process for all of them
        return _write_folder(args, cfg, state, vqa_cfg, cam_cfg, on_error, out_dir, samples, details)


def _write_folder(args, cfg, state, vqa_cfg: VqaConfig, cam_cfg: GradcamConfig, on_error: str, out_dir,
                  samples, details: dict) -> dict:
    """Stage 1 proper, under the folder's lock: provenance, this process's shard, finalize (main process)."""
    if state.is_main_process:
        write_provenance(out_dir, "gradcam", cfg, status="running", **details)
    state.wait_for_everyone()

    device = state.device if vqa_cfg.device == "auto" else vqa_cfg.device
    vqa = load_vqa(vqa_cfg.model, device, vqa_cfg.half_precision)
    explainer = VqaGradcam(vqa, cam_cfg, vqa_cfg)
    shard = samples[state.process_index:: state.num_processes]
    previews = None if cam_cfg.previews < 0 else math.ceil(cam_cfg.previews / state.num_processes)
    log.info("rank %d/%d: %d of %d persons of split %s -> %s (%s, layer %d, grid %s)", state.process_index,
             state.num_processes, len(shard), len(samples), cam_cfg.split, out_dir, cam_cfg.method,
             cam_cfg.layer, vqa.patch_grid_hw)
    with PseudoLabelWriter(out_dir, shard=f"rank{state.process_index}", chunk_size=128,
                           max_previews=previews) as writer:
        stats = gradcam_pseudolabels(shard, explainer, writer, vqa_cfg, per_person=args.per_person,
                                     on_error=on_error, progress=not args.no_progress and state.is_main_process)
    log.info("rank %d: %d persons in %.1f s (%.2f persons/s), %d valid, %d already done, %d unreadable images",
             state.process_index, stats.persons, stats.seconds, stats.persons / max(stats.seconds, 1e-9),
             stats.valid, stats.skipped_done, stats.image_errors)
    state.wait_for_everyone()
    summary: dict = {}
    if state.is_main_process:
        summary = finalize(out_dir, expected_ids=[s.sample_id for s in samples])
        write_provenance(out_dir, "gradcam", cfg, status="done", summary=summary, grid_hw=list(vqa.patch_grid_hw),
                         device=str(vqa.device), dtype=str(vqa.dtype), per_person=args.per_person, **details)
        log.info("gradcam folder %s: %s", out_dir, summary)
    return summary


if __name__ == "__main__":
    run_stage(main)
