"""Stage 1 over a list of persons: prompt, answer, Grad-CAM, and write a pseudo-label folder (resumable).

``gradcam_pseudolabels`` is what ``make gradcam`` runs on each process; ``pipelines/gradcam.py`` adds config,
process splitting (accelerate) and finalisation around it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from gcdr.data.sample import PersonSample
from gcdr.heatmaps import HEATMAP_SIZE, normalize_heatmap
from gcdr.pseudolabels import (
    PseudoLabel,
    PseudoLabelWriter,
    invalid_reason,
    resize_to_64,
)
from gcdr.vqa.blip import VqaConfig
from gcdr.vqa.gradcam import CamResult, VqaGradcam
from gcdr.vqa.preview import cam_overlay
from gcdr.vqa.prompt import person_prompt

log = logging.getLogger(__name__)
IMAGE_ERROR = "image_error"


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
