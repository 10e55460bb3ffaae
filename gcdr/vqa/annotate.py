"""Stage 1 (`make gradcam`): prompt, answer, Grad-CAM for every person of a split, written as a pseudo-label folder.

:func:`annotate_split` is the stage: it claims ``<out_root>/pseudo/gradcam-<split>/`` for one request
(gcdr.stage_output.StageOutput, see :func:`gradcam_request`), splits the persons over the processes of an
``accelerate launch`` / ``torchrun`` job (each writes its own shard ``rank<i>``), runs
:func:`gradcam_pseudolabels` on each, and the main process merges the manifest (gcdr.pseudolabels.finalize).
The same request resumes (persons already in the folder are skipped) or, once done, does nothing; another
request (other persons, model, question, Grad-CAM settings ...) is refused with one line, ``--restart``
replaces it. The folder is final once summary.json is written and provenance.json says "done" (what refine
checks); a run in which no person got a valid map ends with :class:`NoValidPersonError`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from gcdr import paths
from gcdr.config import RunConfig
from gcdr.data import load_samples
from gcdr.data.sample import PersonSample
from gcdr.errors import UserError
from gcdr.fingerprints import file_sha256, json_sha256, samples_fingerprint
from gcdr.heatmaps import HEATMAP_SIZE, normalize_heatmap
from gcdr.provenance import PROVENANCE_FILE
from gcdr.pseudolabels import (
    PseudoLabel,
    PseudoLabelWriter,
    finalize,
    invalid_reason,
    resize_to_64,
)
from gcdr.stage_output import StageOutput
from gcdr.vqa.blip import VqaConfig, load_vqa, pick_device
from gcdr.vqa.gradcam import CROSS_ATTENTION, CamResult, GradcamConfig, VqaGradcam
from gcdr.vqa.keynoun import spacy_available
from gcdr.vqa.preview import cam_overlay
from gcdr.vqa.prompt import person_prompt

log = logging.getLogger(__name__)
IMAGE_ERROR = "image_error"

STAGE = "gradcam"
# files of a local VQA model directory that say how it was made, not what it computes
MODEL_RECORDS = (PROVENANCE_FILE, "metrics.json")


class NoValidPersonError(UserError, RuntimeError):
    """Stage 1 ended without a single valid map (or had no person to explain); the message is one line."""


# ------------------------------------------------------------------------------------------- the stage
def annotate_split(cfg: RunConfig, *, limit: int | None = None, per_person: bool = False, progress: bool = True,
                   restart: bool = False) -> dict[str, Any]:
    """Stage 1 for ``gradcam.split`` of ``cfg`` (see the module docstring); returns the folder summary
    (main process; {} on the others).

    limit: only the first N persons of the split; per_person: one person per forward/backward (the reference
    path); restart: empty the output folder first.
    """
    vqa_cfg, cam_cfg = cfg.vqa, cfg.gradcam
    # on a machine without GPUs, several processes (accelerate launch / torchrun) still split the work (gloo)
    state = PartialState(cpu=vqa_cfg.device == "cpu" or not torch.cuda.is_available())
    out_dir = paths.gradcam_dir(cfg, cam_cfg.split)
    samples = load_samples(cfg, cam_cfg.split)[:limit]
    if not samples:
        raise NoValidPersonError(f"split {cam_cfg.split!r} of {cfg.dataset.root} has no persons "
                                 f"(limit {limit}); nothing to explain")
    device = state.device if vqa_cfg.device == "auto" else vqa_cfg.device
    request = gradcam_request(samples, vqa_cfg, cam_cfg, per_person=per_person, processes=state.num_processes,
                              half_precision=vqa_cfg.half_precision and pick_device(device).type == "cuda")
    details = dict(model=vqa_cfg.model, method=cam_cfg.method, layer=cam_cfg.layer, target=cam_cfg.target,
                   question=vqa_cfg.question, split=cam_cfg.split, persons=len(samples))
    # the main process claims the folder (lock, request) for all processes; the others wait for it
    with StageOutput(out_dir, STAGE, request, config=cfg, restart=restart,
                     main_process=state.is_main_process) as output:
        if output.start_unless_done(state.wait_for_everyone, **details):
            return output.provenance().get("summary", {}) if state.is_main_process else {}

        vqa = load_vqa(vqa_cfg.model, device, vqa_cfg.half_precision)
        explainer = VqaGradcam(vqa, cam_cfg, vqa_cfg)
        shard = samples[state.process_index:: state.num_processes]
        previews = None if cam_cfg.previews < 0 else math.ceil(cam_cfg.previews / state.num_processes)
        log.info("rank %d/%d: %d of %d persons of split %s -> %s (%s, layer %d, grid %s)", state.process_index,
                 state.num_processes, len(shard), len(samples), cam_cfg.split, out_dir, cam_cfg.method,
                 cam_cfg.layer, vqa.patch_grid_hw)
        with PseudoLabelWriter(out_dir, shard=f"rank{state.process_index}", chunk_size=128,
                               max_previews=previews) as writer:
            stats = gradcam_pseudolabels(shard, explainer, writer, vqa_cfg, per_person=per_person,
                                         on_error=cfg.dataset.on_error, progress=progress and state.is_main_process)
        log.info("rank %d: %d persons in %.1f s (%.2f persons/s), %d valid, %d already done, %d unreadable images",
                 state.process_index, stats.persons, stats.seconds, stats.persons / max(stats.seconds, 1e-9),
                 stats.valid, stats.skipped_done, stats.image_errors)
        state.wait_for_everyone()
        if not state.is_main_process:
            return {}
        summary = finalize(out_dir, expected_ids=[s.sample_id for s in samples])
        if not summary["valid"]:  # left "running": refine refuses it, a rerun says this again
            raise NoValidPersonError(f"none of the {summary['persons']} persons of split {cam_cfg.split!r} got a "
                                     f"valid Grad-CAM map ({summary['invalid_reasons']}); check vqa.model "
                                     f"({vqa_cfg.model}), vqa.question and the images; the maps are in {out_dir}")
        output.finish(summary=summary, grid_hw=list(vqa.patch_grid_hw), device=str(vqa.device),
                      dtype=str(vqa.dtype), per_person=per_person, **details)
        log.info("gradcam folder %s: %s", out_dir, summary)
    return summary


def gradcam_request(samples: Sequence[PersonSample], vqa_cfg: VqaConfig, cam_cfg: GradcamConfig, *,
                    per_person: bool, processes: int, half_precision: bool) -> dict[str, Any]:
    """What defines stage 1's maps (gcdr.stage_output): the persons, the VQA model and its prompt, the Grad-CAM
    settings, and what decides which persons share a forward pass (batch size, processes: batched maps equal
    one-by-one maps only up to float error, which can flip a greedy answer). Settings that do not apply to
    ``cam_cfg.method`` are left out; previews, progress and output paths are not part of it.

    half_precision: whether the model really runs in float16 (only on a GPU).
    """
    cam = {"method": cam_cfg.method, "layer": cam_cfg.layer, "target": cam_cfg.target,
           "subtoken": cam_cfg.subtoken, "tagger": resolved_tagger(cam_cfg.tagger),
           "batch_size": 1 if per_person else cam_cfg.batch_size}
    if cam_cfg.method == CROSS_ATTENTION:
        cam["query"] = cam_cfg.query
    else:
        cam["vision_module"] = cam_cfg.vision_module
    return {
        "split": cam_cfg.split,
        "persons": len(samples),
        "persons_fingerprint": samples_fingerprint(samples),
        # the green box is the body box when a person has one (vqa.mark); samples_fingerprint leaves it out
        "body_boxes_fingerprint": json_sha256([s.body_box_xyxy_px for s in samples]),
        "vqa": {**vqa_model_identity(vqa_cfg.model), "question": vqa_cfg.question,
                "fallback_question": vqa_cfg.fallback_question, "mark": vqa_cfg.mark,
                "max_answer_tokens": vqa_cfg.max_answer_tokens, "num_beams": vqa_cfg.num_beams,
                "half_precision": half_precision},
        "gradcam": cam,
        "processes": processes,
    }


def vqa_model_identity(model: str) -> dict[str, str]:
    """A hub id as it is; a local directory by its resolved path and the sha256 of what it computes with
    (weights, configs, tokenizer; not its provenance or metrics), so a retrained stand-in is another model."""
    folder = Path(model)
    if not folder.is_dir():
        return {"model": model}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.name not in MODEL_RECORDS)
    return {"model": str(folder.resolve()),
            "model_sha256": json_sha256({p.relative_to(folder).as_posix(): file_sha256(p) for p in files})}


def resolved_tagger(tagger: str) -> str:
    """``auto`` is spaCy where it is installed, else the lexical rules: the request records which one ran."""
    if tagger != "auto":
        return tagger
    return "spacy" if spacy_available() else "lexical"


# ------------------------------------------------------------------------------------ one process's persons


@dataclass
class AnnotateStats:
    """Counts of one ``gradcam_pseudolabels`` call (this process only)."""

    persons: int = 0  # persons written now
    skipped_done: int = 0  # already in the folder (resume)
    valid: int = 0
    image_errors: int = 0
    seconds: float = 0.0


def cam_to_pseudolabel(sample: PersonSample, result: CamResult) -> PseudoLabel:
    """The folder record of one person: raw map kept when finite; 64x64 map = min-max(resize(raw)) if valid
    (bilinear resize of the patch grid to 64x64, then (h - min) / (max - min), as GCDR loads its maps).

    Invalid (kept, never dropped): ``no_answer`` (empty answer), ``nan``, ``all_zero``, ``constant``.
    """
    reason = invalid_reason(result.raw_map, result.answer, require_answer=True)
    raw = result.raw_map
    finite_raw = raw if raw is not None and np.all(np.isfinite(raw)) else None
    if reason:
        heatmap = np.zeros((HEATMAP_SIZE, HEATMAP_SIZE), np.float32)
    else:  # raw maps can be ~1e-9 (probability gradients): rescale first so that GCDR's eps stays negligible
        heatmap = normalize_heatmap(resize_to_64(raw / np.abs(raw).max()))  # [64, 64]
    return PseudoLabel(
        sample_id=sample.sample_id, heatmap_64=heatmap, valid=not reason, invalid_reason=reason,
        raw_map=finite_raw, answer=result.answer, key_noun=result.key_noun, image_path=sample.image_path,
        head_box_xyxy_px=tuple(float(v) for v in sample.head_box_xyxy_px), source=sample.source,
        extra={"key_token": result.key_token, "target_score": result.score},
    )


def _image_error_label(sample: PersonSample, error: Exception) -> PseudoLabel:
    return PseudoLabel(
        sample_id=sample.sample_id, heatmap_64=np.zeros((HEATMAP_SIZE, HEATMAP_SIZE), np.float32), valid=False,
        invalid_reason=IMAGE_ERROR, image_path=sample.image_path,
        head_box_xyxy_px=tuple(float(v) for v in sample.head_box_xyxy_px), source=sample.source,
        extra={"key_token": "", "target_score": float("nan"), "error": str(error)[:200]},
    )


def _default_loader() -> Callable[[str], np.ndarray]:
    from gcdr.data.images import load_image_rgb

    return load_image_rgb


def gradcam_pseudolabels(samples: Sequence[PersonSample], explainer: VqaGradcam, writer: PseudoLabelWriter,
                         vqa_cfg: VqaConfig, *, per_person: bool = False, on_error: str = "raise",
                         progress: bool = True,
                         image_loader: Callable[[str], np.ndarray] | None = None) -> AnnotateStats:
    """Explain every person of ``samples`` not yet in ``writer``'s folder and add its pseudo-label.

    per_person: one person per forward/backward (the reference path) instead of ``explainer.cfg.batch_size``.
    on_error:   ``raise`` on an unreadable image, or ``skip``: log it, count it and write an invalid row
                (reason ``image_error``) so the manifest still covers the person.
    Previews (image with box + answer + heatmap) are written while ``writer.wants_preview()``.
    """
    if on_error not in {"raise", "skip"}:
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    load = image_loader or _default_loader()
    stats = AnnotateStats()
    todo = [s for s in samples if s.sample_id not in writer.done_ids]
    stats.skipped_done = len(samples) - len(todo)
    if stats.skipped_done:
        log.info("resuming: %d of %d persons already done", stats.skipped_done, len(samples))
    batch_size = 1 if per_person else explainer.cfg.batch_size
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="gradcam", unit="person", disable=not progress)
    for first in range(0, len(todo), batch_size):
        batch = todo[first:first + batch_size]
        images: dict[str, np.ndarray | Exception] = {}
        for sample in batch:
            if sample.image_path not in images:
                try:
                    images[sample.image_path] = load(sample.image_path)
                except (OSError, ValueError) as error:
                    if on_error == "raise":
                        raise
                    log.warning("sample %s (%s): %s", sample.sample_id, sample.source, error)
                    images[sample.image_path] = error
        readable = [s for s in batch if not isinstance(images[s.image_path], Exception)]
        prompts = [person_prompt(images[s.image_path], s, vqa_cfg.question, vqa_cfg.fallback_question,
                                 vqa_cfg.mark) for s in readable]
        results = dict(zip((s.sample_id for s in readable), explainer.explain(prompts)))
        prompt_of = dict(zip((s.sample_id for s in readable), prompts))
        for sample in batch:  # keep the input order in the folder
            if sample.sample_id not in results:
                stats.image_errors += 1
                writer.add(_image_error_label(sample, images[sample.image_path]))
                continue
            result = results[sample.sample_id]
            label = cam_to_pseudolabel(sample, result)
            preview = None
            if writer.wants_preview():
                caption = f"{result.answer or '(no answer)'}  [{result.key_noun}]"
                if not label.valid:
                    caption += f"  invalid: {label.invalid_reason}"
                preview = cam_overlay(prompt_of[sample.sample_id].image_rgb, label.raw_map, caption)
            writer.add(label, preview_rgb=preview)
            stats.valid += int(label.valid)
        stats.persons += len(batch)
        bar.update(len(batch))
    bar.close()
    writer.flush()
    stats.seconds = time.perf_counter() - start
    return stats
