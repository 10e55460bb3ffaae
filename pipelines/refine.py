"""Stage 2b (`make refine`): Grad-CAM maps -> pseudo-labels, by GCDR diffusion refinement or a baseline.

    make refine T=250 [STEPS=2] [SAMPLES=1] [SRC=<gradcam folder>] [METHOD=gcdr|none|argmax]
    python -m pipelines.refine --config configs/synthgaze.yaml --set refine.T=250 [--src DIR] [--out DIR]
    accelerate launch --num_processes 2 -m pipelines.refine ...          (NPROC=2 make refine)

Reads the pseudo-label folder ``--src`` (default gcdr.paths.gradcam_dir(cfg, split), split =
``refine.split`` or ``gradcam.split``) for every person of the split and writes a new folder
(gcdr.paths.refined_dir, ``--out`` overrides) through PseudoLabelWriter:

- ``gcdr`` (docs/method.md#refinement): the normalised 64x64 Grad-CAM is noised to timestep T (one eps per person
  and draw), DDIM runs from T down to 0 in ``steps`` steps conditioned on the person's scene / head /
  face (GazeDataset, no augmentation), ``samples`` draws are averaged and min-max normalised. T = 0
  returns the input; T = 500 (the number of training steps) starts from pure noise and ignores it.
  The teacher is ``refine.teacher`` (default <teacher_dir>/model, written by `make train-teacher`).
- ``none``: the source map itself (normalised): the "raw Grad-CAM" baseline.
- ``argmax``: a sigma-3 Gaussian at the argmax of the raw Grad-CAM grid, x = (idx mod w) / w,
  y = (idx div w) / h, no half-cell offset (docs/method.md#baselines-raw-grad-cam-and-argmax); the 64x64 map when no raw grid is stored.

The source must be final and hold every person of the split (gcdr.pseudolabels.check_final): a folder
its stage did not finish (killed, still running, changed since) or that lacks persons of the split is
refused with one line saying which stage to finish; its content fingerprint is part of the request, so a
refined folder made from another version of the source is refused as made with other settings, never taken
as done. Persons whose Grad-CAM is invalid stay invalid (same reason); a refinement that comes out constant
or not finite (e.g. from an untrained teacher) is written invalid with reason "refined_" +
gcdr.pseudolabels.invalid_reason. Noise is drawn per person from (refine.seed, sample id) and a resumed run
cuts the same batches as an uninterrupted one, so resuming gives the same bytes; another batch size or number
of processes changes the maps only at float precision (about 1e-7: the network's arithmetic depends on the
batch). Resumable: persons already in
the output folder are skipped; a folder made with other settings (source and its fingerprint, teacher, T,
steps, samples, seed, eta, semantics) is refused. The output folder is locked while the stage runs
(gcdr.locking: a second run on it is refused; temporary files of a killed run are removed). Previews
(source | result overlays) for the first ``refine.previews`` persons; provenance.json records the lineage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader
from tqdm import tqdm

from gcdr import paths
from gcdr.config import add_config_args, config_from_args, section
from gcdr.data import load_samples
from gcdr.data.dataset import GazeDataset, enlarges_head_boxes, gaze_collate
from gcdr.data.images import ImageReadError, load_image_rgb
from gcdr.data.sample import PersonSample
from gcdr.heatmaps import argmax_point_norm, gaussian_heatmap_64, normalize_heatmap
from gcdr.locking import folder_lock, run_stage
from gcdr.provenance import PROVENANCE_FILE, write_provenance
from gcdr.pseudolabels import (
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelWriter,
    check_final,
    finalize,
    invalid_reason,
)
from gcdr.teacher.config import RefineConfig
from gcdr.teacher.diffusion import make_ddim_scheduler, noise_for_samples, refine_heatmaps, refine_timesteps
from gcdr.teacher.model import WEIGHTS_FILE, GazeDiffusionTeacher
from gcdr.vqa.preview import cam_overlay

log = logging.getLogger("gcdr.refine")

STAGE = "refine"
METHODS = ("gcdr", "none", "argmax")


def cpu_processes() -> bool:
    """True for a multi-process launch (torchrun / `accelerate launch --multi_gpu`) on a machine without CUDA:
    Accelerate then needs ``cpu=True`` to join the processes with gloo (else each one runs as rank 0 of 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------ baselines
def argmax_gaussian(raw_map: np.ndarray) -> np.ndarray:
    """The "argmax" pseudo-label: a sigma-3 Gaussian [64, 64] at the first maximum of a raw [h, w] grid."""
    return gaussian_heatmap_64(np.asarray(argmax_point_norm(np.asarray(raw_map, np.float32))))


def baseline_heatmap(method: str, source: PseudoLabel) -> np.ndarray:
    """``none``: the normalised source map; ``argmax``: argmax_gaussian of its raw grid (else its 64x64 map)."""
    if method == "none":
        return normalize_heatmap(source.heatmap_64)
    grid = source.raw_map if source.raw_map is not None else source.heatmap_64
    return argmax_gaussian(grid)


# ------------------------------------------------------------------------------------------- helpers
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_label(sample: PersonSample, heatmap_64: np.ndarray, source: PseudoLabel | None,
                 valid: bool = True, reason: str = "", raw_map: np.ndarray | None = None) -> PseudoLabel:
    """A label for ``sample`` that carries the source's answer / key noun over (lineage)."""
    return PseudoLabel(
        sample_id=sample.sample_id, heatmap_64=np.asarray(heatmap_64, np.float32), valid=valid,
        invalid_reason=reason, raw_map=raw_map, answer=source.answer if source else "",
        key_noun=source.key_noun if source else "", image_path=sample.image_path,
        head_box_xyxy_px=tuple(float(v) for v in sample.head_box_xyxy_px), source=sample.source)


def preview(sample: PersonSample, source_64: np.ndarray, result_64: np.ndarray, title: str) -> np.ndarray | None:
    """[source overlay | result overlay] with the head box (green) and any ground-truth point (white)."""
    try:
        image = load_image_rgb(sample.image_path)
    except ImageReadError as error:
        log.warning("no preview for %s: %s", sample.sample_id, error)
        return None
    image = image.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in sample.head_box_xyxy_px)
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
    height, width = image.shape[:2]
    for gx, gy in np.asarray(sample.gaze_points_norm, np.float32).reshape(-1, 2):
        if gx >= 0 and gy >= 0 and sample.inout == 1:
            cv2.circle(image, (int(gx * width), int(gy * height)), 4, (255, 255, 255), -1)
    panels = [cam_overlay(image, source_64, "source (Grad-CAM)", max_side=320),
              cam_overlay(image, result_64, title, max_side=320)]
    return np.concatenate(panels, axis=1)


def check_request(out_dir: Path, request: dict[str, Any]) -> None:
    """Refuse to add to a folder that was made with other settings."""
    record_file = out_dir / PROVENANCE_FILE
    if not record_file.is_file():
        return
    previous = json.loads(record_file.read_text()).get("request")
    if previous is not None and previous != request:
        changed = sorted(k for k in request if previous.get(k) != request[k])
        raise ValueError(f"{out_dir} was made with other settings ({changed}: {[previous.get(k) for k in changed]} "
                         f"-> {[request[k] for k in changed]}); delete it or pass --out")


# ---------------------------------------------------------------------------------------------- run
def run(cfg: dict[str, Any], src: str | Path | None = None, out: str | Path | None = None,
        limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Refine (or copy / argmax) every person of the split; returns the folder summary (main process)."""
    refine = section(cfg, "refine", RefineConfig)
    if refine.method is None:  # `--set refine.method=none` parses to None (YAML null)
        refine.method = "none"
    if refine.method not in METHODS:
        raise ValueError(f"refine.method must be one of {METHODS}, got {refine.method!r}")
    split = refine.split or (cfg.get("gradcam") or {}).get("split", "unlabeled")
    src_dir = Path(src) if src else paths.gradcam_dir(cfg, split)
    source = PseudoLabelFolder(src_dir)
    out_dir = Path(out) if out else paths.refined_dir(cfg, refine.method, refine.T, split)
    samples = load_samples(cfg, split)[:limit]
    # a source its stage did not finish, or without every person of the split, is refused (never "missing" rows)
    what = f"split {split!r}" + (f" (first {limit})" if limit is not None else "")
    source_summary = check_final(src_dir, [s.sample_id for s in samples], source.sample_ids, what)
    outside = len(set(source.sample_ids) - {s.sample_id for s in samples})
    if outside:
        log.info("%s: %d persons are not in split %r (limit %s) and are ignored", src_dir, outside, split, limit)
    state = PartialState(cpu=cpu_processes())
    show = progress and state.is_local_main_process
    if refine.cpu_threads and state.device.type == "cpu":
        torch.set_num_threads(refine.cpu_threads)

    request: dict[str, Any] = {"method": refine.method, "source": str(src_dir.resolve()), "split": split,
                               "source_fingerprint": source_summary["fingerprint"]}
    model = None
    if refine.method == "gcdr":
        teacher_dir = Path(refine.teacher) if refine.teacher else paths.teacher_dir(cfg) / "model"
        model = GazeDiffusionTeacher.from_pretrained(teacher_dir).to(state.device).eval()
        if refine.T > model.config.num_train_timesteps:  # refused before anything is written
            raise SystemExit(f"refine.T={refine.T} is beyond the {model.config.num_train_timesteps} diffusion steps "
                             f"of the teacher in {teacher_dir}; use T in [0, {model.config.num_train_timesteps}] "
                             f"({model.config.num_train_timesteps} = sampling from pure noise)")
        request.update(teacher=str(teacher_dir.resolve()), teacher_sha256=file_sha256(teacher_dir / WEIGHTS_FILE),
                       T=refine.T, steps=refine.steps, samples=refine.samples, seed=refine.seed, eta=refine.eta,
                       semantics=refine.semantics)
    details = dict(request=request, source_provenance=source.provenance.get("stage"), persons=len(samples))
    if state.is_main_process:
        check_request(out_dir, request)
    # the main process holds the output folder's lock for all processes (and clears a killed run's temporaries)
    with folder_lock(out_dir, enabled=state.is_main_process):
        if state.is_main_process:
            write_provenance(out_dir, STAGE, cfg, status="running", **details)
        state.wait_for_everyone()
        seconds = write_refined(samples[state.process_index:: state.num_processes], source, out_dir, refine, cfg,
                                model, state, show)
        state.wait_for_everyone()
        summary: dict[str, Any] = {}
        if state.is_main_process:
            summary = finalize(out_dir, expected_ids=[s.sample_id for s in samples])
            write_provenance(out_dir, STAGE, cfg, status="done", summary=summary, seconds_last_run=round(seconds, 2),
                             **details)
            log.info("%s: %s", out_dir, summary)
    return summary


def write_refined(shard: list[PersonSample], source: PseudoLabelFolder, out_dir: Path, refine: RefineConfig,
                  cfg: dict[str, Any], model: GazeDiffusionTeacher | None, state: PartialState, show: bool) -> float:
    """This process's persons (every one in ``source``) refined into ``out_dir``; returns the seconds taken."""
    start = time.perf_counter()
    previews = refine.previews if state.is_main_process else 0
    with PseudoLabelWriter(out_dir, shard=f"rank{state.process_index}", chunk_size=256,
                           max_previews=None if previews < 0 else previews) as writer:
        todo = [s for s in shard if s.sample_id not in writer.done_ids]
        log.info("rank %d/%d: %d of %d persons to do (%s) -> %s", state.process_index, state.num_processes,
                 len(todo), len(shard), refine.method, out_dir)
        for sample in todo:
            if not source.is_valid(sample.sample_id):
                label = source.get(sample.sample_id)
                writer.add(output_label(sample, np.zeros((64, 64), np.float32), label, False, label.invalid_reason))
        if refine.method == "gcdr":
            # batches are cut from every valid person of the shard, done or not, so that a resumed run computes
            # each person in the same batch as an uninterrupted run (the arithmetic depends on the batch)
            valid = [s for s in shard if source.is_valid(s.sample_id)]
            refine_with_teacher(model, valid, source, writer, refine, cfg, state.device, show)
        else:
            for sample in tqdm([s for s in todo if source.is_valid(s.sample_id)], desc=refine.method,
                               disable=not show):
                label = source.get(sample.sample_id)
                heatmap = baseline_heatmap(refine.method, label)
                raw = label.raw_map if refine.method == "none" else None
                image = preview(sample, label.heatmap_64, heatmap, refine.method) if writer.wants_preview() else None
                writer.add(output_label(sample, heatmap, label, raw_map=raw), preview_rgb=image)
    seconds = time.perf_counter() - start
    log.info("rank %d: %d persons in %.1f s (%.1f persons/s)", state.process_index, len(todo), seconds,
             len(todo) / max(seconds, 1e-9))
    return seconds


def refine_with_teacher(model: GazeDiffusionTeacher, samples: list[PersonSample], source: PseudoLabelFolder,
                        writer: PseudoLabelWriter, refine: RefineConfig, cfg: dict[str, Any],
                        device: torch.device, progress: bool) -> None:
    """GCDR refinement of ``samples`` (all valid in ``source``) in batches, written through ``writer``."""
    if not samples:
        return
    on_error = (cfg.get("dataset") or {}).get("on_error", "raise")
    dataset = GazeDataset(samples, train=False, style="vat", on_error=on_error,
                          enlarge_head_box=enlarges_head_boxes(cfg))
    by_id = {s.sample_id: s for s in samples}
    for sample_id, reason in dataset.skipped:  # images missing (on_error: skip)
        writer.add(output_label(by_id[sample_id], np.zeros((64, 64), np.float32), source.get(sample_id), False,
                                "image_missing"))
        log.warning("%s: %s", sample_id, reason)
    scheduler = make_ddim_scheduler(model.config)
    num_steps = len(refine_timesteps(min(refine.T, model.config.num_train_timesteps), refine.steps))
    loader = DataLoader(dataset, batch_size=refine.batch_size, shuffle=False, num_workers=refine.num_workers,
                        collate_fn=gaze_collate)
    title = f"GCDR T={refine.T} steps={refine.steps}"
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"refine T={refine.T}", disable=not progress):
            ids = [dataset.samples[i].sample_id for i in batch["index"].tolist()]
            if all(i in writer.done_ids for i in ids):  # written by an earlier run
                continue
            # the whole batch is computed (as in an uninterrupted run); only the persons not yet written are kept
            prior = torch.from_numpy(np.stack([source.heatmap_64(i) for i in ids])).to(device)  # [B, 64, 64]
            context = model.encode(batch["scene"].to(device), batch["head_channel"].to(device),
                                   batch["face"].to(device))
            noises = noise_for_samples(ids, refine.seed, draws=refine.samples, steps=max(num_steps, 1))
            refined, mean_x0 = refine_heatmaps(model, scheduler, context, prior, refine.T, refine.steps, noises,
                                         eta=refine.eta, semantics=refine.semantics)  # [B, 64, 64]
            refined, mean_x0 = refined.cpu().numpy(), mean_x0.cpu().numpy()
            for row, sample_id in enumerate(ids):
                if sample_id in writer.done_ids:  # written by an earlier run, or an on_error=skip stand-in repeat
                    continue
                sample = by_id[sample_id]
                reason = invalid_reason(mean_x0[row])  # e.g. an untrained teacher's constant output
                if reason:
                    writer.add(output_label(sample, np.zeros((64, 64), np.float32), source.get(sample_id), False,
                                            f"refined_{reason}"))
                    continue
                image = preview(sample, prior[row].cpu().numpy(), refined[row], title) if writer.wants_preview() else None
                writer.add(output_label(sample, refined[row], source.get(sample_id)), preview_rgb=image)
    for index, error in dataset.unreadable.items():  # undecodable images (on_error: skip)
        sample = dataset.samples[index]
        if sample.sample_id not in writer.done_ids:
            writer.add(output_label(sample, np.zeros((64, 64), np.float32), source.get(sample.sample_id), False,
                                    "image_unreadable"))
            log.warning("%s: %s", sample.sample_id, error)
    for sample in dataset.samples:  # replaced in a loader worker (whose ``unreadable`` this process never sees)
        if sample.sample_id not in writer.done_ids:
            writer.add(output_label(sample, np.zeros((64, 64), np.float32), source.get(sample.sample_id), False,
                                    "image_unreadable"))
            log.warning("%s: its image could not be read (on_error: skip)", sample.sample_id)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--src", default=None, help="source pseudo-label folder (default: the split's Grad-CAM)")
    parser.add_argument("--out", default=None, help="output folder (default: gcdr.paths.refined_dir)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N persons of the split")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    return run(cfg, src=args.src, out=args.out, limit=args.limit, progress=not args.no_progress)


if __name__ == "__main__":
    run_stage(main)
