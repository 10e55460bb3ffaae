"""Stage 2b (`make refine`): Grad-CAM maps -> pseudo-labels, by GCDR diffusion refinement or a baseline
(docs/method.md: raw, argmax, direct mapping, self-training).

:func:`refine_split` reads the final pseudo-label folder ``src`` (default gcdr.paths.gradcam_dir(cfg, split),
split = ``refine.split`` or ``gradcam.split``) for every person of the split and writes a new folder (default
gcdr.paths.refined_dir) through PseudoLabelWriter:

- ``gcdr`` (docs/method.md#refinement): the normalised 64x64 Grad-CAM is noised to timestep T (one eps per
  person and draw), DDIM runs from T down to 0 in ``steps`` steps conditioned on the person's scene / head /
  face (GazeDataset, no augmentation), ``samples`` draws are averaged and min-max normalised. T = 0 returns the
  input; T = 500 (the number of training steps) starts from pure noise and ignores it. The teacher is
  ``refine.teacher`` (default <teacher_dir>/model, written by `make train-teacher`). With ``keep_draws`` every
  draw is kept too, min-max normalised (parts/*.draws_64.npy), with each person's ``draw_spread``: the mean
  distance of the draws' argmax to the mean map's argmax (gcdr.heatmaps.argmax_spread, on the stored float16
  maps); the mean map is the same as without it (docs/method.md#k-draws-and-confidence).
- ``none``: the source map itself (normalised): the "raw Grad-CAM" baseline.
- ``argmax``: a sigma-3 Gaussian at the argmax of the raw Grad-CAM grid, x = (idx mod w) / w,
  y = (idx div w) / h, no half-cell offset (docs/method.md#baselines-raw-grad-cam-and-argmax); the 64x64 map
  when no raw grid is stored.
- ``direct``: the direct-mapping teacher (teacher.objective direct) applied once to the Grad-CAM map, no noise.
- ``student``: self-training: ``refine.student`` (a student trained on the labeled persons) predicts every
  person of the split, whatever its Grad-CAM.

The source must be final and hold every person of the split (gcdr.pseudolabels.check_final), else one line
says which stage to finish. The output folder is claimed for one request (gcdr.stage_output.StageOutput):
method, source and its content fingerprint, split, the persons (their fingerprint), and for ``gcdr`` the
teacher and its sha256, T, steps, samples, seed, eta, semantics, keep_draws. The same request
resumes (persons already written are skipped) or, once done, does nothing; another request is refused with one
line (``--restart`` replaces it).

Persons whose Grad-CAM is invalid stay invalid (same reason); a refinement that comes out constant or not
finite (e.g. from an untrained teacher) is written invalid with reason "refined_" +
gcdr.pseudolabels.invalid_reason. Noise is drawn per person from (refine.seed, sample id) and a resumed run
cuts the same batches as an uninterrupted one, so resuming gives the same bytes; another batch size or number
of processes changes the maps only at float precision (about 1e-7: the network's arithmetic depends on the
batch), which is why neither is part of the request. Previews (source | result overlays) for the first
``refine.previews`` persons; provenance.json records the lineage.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader
from tqdm import tqdm

from gcdr import paths
from gcdr.config import DEFAULT_CONFIG, RunConfig
from gcdr.data import load_samples
from gcdr.data.dataset import GazeDataset, enlarges_head_boxes, gaze_collate
from gcdr.data.sample import PersonSample
from gcdr.errors import UserError
from gcdr.fingerprints import file_sha256, folder_sha256, samples_fingerprint
from gcdr.heatmaps import (
    argmax_point_norm,
    argmax_spread,
    gaussian_heatmap_64,
    normalize_heatmap,
    normalize_heatmaps,
)
from gcdr.processes import cpu_processes
from gcdr.pseudolabels import (
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelWriter,
    check_final,
    finalize,
    invalid_reason,
)
from gcdr.stage_output import StageOutput
from gcdr.students.evaluation import dataset_for_student, predict_dataset
from gcdr.students.export import load_student
from gcdr.students.gazelle import configured_gazelle_backbone
from gcdr.teacher.config import RefineConfig
from gcdr.teacher.diffusion import (
    direct_inputs,
    make_ddim_scheduler,
    noise_for_samples,
    refine_heatmaps,
    refine_timesteps,
)
from gcdr.teacher.model import WEIGHTS_FILE, GazeDiffusionTeacher
from gcdr.vqa.preview import before_after_preview

log = logging.getLogger("gcdr.refine")

STAGE = "refine"


class RefineSetupError(UserError, ValueError):
    """Refine cannot start: no teacher yet, or a setting the teacher cannot honour; the message is one line."""


# ------------------------------------------------------------------------------------------ the stage
def refine_split(cfg: RunConfig, src: str | Path | None = None, out: str | Path | None = None,
                 limit: int | None = None, progress: bool = True, restart: bool = False) -> dict[str, Any]:
    """Refine (or copy / argmax) every person of the split into the output folder (see the module docstring).

    src / out: the source and output folders (defaults from gcdr.paths); limit: only the first N persons of the
    split; restart: empty the output folder first. Returns the folder summary (main process; {} on the others).
    """
    refine = cfg.refine
    split = refine.split or cfg.gradcam.split
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

    # the persons are part of the request: another --limit cuts other batches (and is another output)
    request: dict[str, Any] = {"method": refine.method, "source": str(src_dir.resolve()), "split": split,
                               "source_fingerprint": source_summary["fingerprint"], "persons": len(samples),
                               "persons_fingerprint": samples_fingerprint(samples)}
    model = student = None
    if refine.method in ("gcdr", "direct"):
        teacher_dir = teacher_model_dir(cfg)
        model = GazeDiffusionTeacher.from_pretrained(teacher_dir).to(state.device).eval()
        objective = "diffusion" if refine.method == "gcdr" else "direct"
        if model.config.objective != objective:
            raise RefineSetupError(f"refine.method={refine.method} needs a teacher trained with teacher.objective="
                                   f"{objective}; {teacher_dir} was trained with {model.config.objective}")
    if refine.method == "direct":
        request.update(teacher=str(teacher_dir.resolve()), teacher_sha256=file_sha256(teacher_dir / WEIGHTS_FILE))
    if refine.method == "student":
        student_path = Path(refine.student)
        student, _ = load_student(student_path, backbone=configured_gazelle_backbone(cfg))
        request.update(student=str(student_path.resolve()),
                       student_sha256=folder_sha256(student_path) if student_path.is_dir() else file_sha256(student_path))
    if refine.method == "gcdr":
        if refine.T > model.config.num_train_timesteps:  # refused before anything is written
            raise RefineSetupError(
                f"refine.T={refine.T} is beyond the {model.config.num_train_timesteps} diffusion steps of the "
                f"teacher in {teacher_dir}; use T in [0, {model.config.num_train_timesteps}] "
                f"({model.config.num_train_timesteps} = sampling from pure noise)")
        request.update(teacher=str(teacher_dir.resolve()), teacher_sha256=file_sha256(teacher_dir / WEIGHTS_FILE),
                       T=refine.T, steps=refine.steps, samples=refine.samples, seed=refine.seed, eta=refine.eta,
                       semantics=refine.semantics, keep_draws=refine.keep_draws)
    elif refine.keep_draws:
        log.info("refine.keep_draws applies to method gcdr only (like refine.samples): method %s keeps no draws",
                 refine.method)
    details = dict(source_provenance=source.provenance.get("stage"), persons=len(samples))
    # the main process claims the folder (lock, request) for all processes; the others wait for it
    with StageOutput(out_dir, STAGE, request, config=cfg, restart=restart,
                     main_process=state.is_main_process) as output:
        if output.start_unless_done(state.wait_for_everyone, **details):
            return output.provenance().get("summary", {}) if state.is_main_process else {}
        seconds = write_refined(samples[state.process_index:: state.num_processes], source, out_dir, refine, cfg,
                                model, state, show, student)
        state.wait_for_everyone()
        summary: dict[str, Any] = {}
        if state.is_main_process:
            summary = finalize(out_dir, expected_ids=[s.sample_id for s in samples])
            output.finish(summary=summary, seconds_last_run=round(seconds, 2), **details)
            log.info("%s: %s", out_dir, summary)
    return summary


def teacher_model_dir(cfg: RunConfig) -> Path:
    """``refine.teacher``, else <teacher_dir>/model; a folder without a trained teacher is refused with the
    command that makes it."""
    if cfg.refine.teacher:
        teacher_dir = Path(cfg.refine.teacher)
        if not (teacher_dir / WEIGHTS_FILE).is_file():
            raise RefineSetupError(f"refine.teacher={teacher_dir} holds no teacher ({WEIGHTS_FILE}); give the "
                                   "model folder that `make train-teacher` writes (<teacher dir>/model)")
        return teacher_dir
    teacher_dir = paths.teacher_dir(cfg) / "model"
    if not (teacher_dir / WEIGHTS_FILE).is_file():
        split = cfg.split
        command = "make train-teacher"
        if cfg.get("_config_path", DEFAULT_CONFIG) != DEFAULT_CONFIG:
            command += f" CONFIG={cfg['_config_path']}"
        command += f" RATIO={paths.ratio_text(split.ratio)} SEED={split.seed}"
        if cfg.teacher.mean_teacher:
            command += " MEAN_TEACHER=1"
        raise RefineSetupError(f"no trained teacher in {teacher_dir}: run `{command}` first (the same RATIO and "
                               "SEED as this refine), or point refine.teacher (TEACHER=) at one")
    return teacher_dir


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


# ----------------------------------------------------------------------------------- one process's shard
def write_refined(shard: list[PersonSample], source: PseudoLabelFolder, out_dir: Path, refine: RefineConfig,
                  cfg: RunConfig, model: GazeDiffusionTeacher | None, state: PartialState, show: bool,
                  student=None) -> float:
    """This process's persons (every one in ``source``) refined into ``out_dir``; returns the seconds taken."""
    start = time.perf_counter()
    previews = refine.previews if state.is_main_process else 0
    draws = refine.samples if refine.keep_draws and refine.method == "gcdr" else None
    with PseudoLabelWriter(out_dir, shard=f"rank{state.process_index}", chunk_size=256,
                           max_previews=None if previews < 0 else previews, draws=draws) as writer:
        todo = [s for s in shard if s.sample_id not in writer.done_ids]
        log.info("rank %d/%d: %d of %d persons to do (%s) -> %s", state.process_index, state.num_processes,
                 len(todo), len(shard), refine.method, out_dir)
        if refine.method == "student":  # self-training needs no Grad-CAM: every person is predicted
            predict_with_student(student, todo, source, writer, refine, cfg, state.device, show)
            todo = []
        for sample in todo:
            if not source.is_valid(sample.sample_id):
                label = source.get(sample.sample_id)
                writer.add(output_label(sample, np.zeros((64, 64), np.float32), label, False, label.invalid_reason))
        if refine.method in ("gcdr", "direct"):
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
                image = (before_after_preview(sample, label.heatmap_64, heatmap, refine.method, label.answer)
                         if writer.wants_preview() else None)
                writer.add(output_label(sample, heatmap, label, raw_map=raw), preview_rgb=image)
    seconds = time.perf_counter() - start
    log.info("rank %d: %d persons in %.1f s (%.1f persons/s)", state.process_index, len(todo), seconds,
             len(todo) / max(seconds, 1e-9))
    return seconds


def refine_with_teacher(model: GazeDiffusionTeacher, samples: list[PersonSample], source: PseudoLabelFolder,
                        writer: PseudoLabelWriter, refine: RefineConfig, cfg: RunConfig,
                        device: torch.device, progress: bool) -> None:
    """GCDR refinement of ``samples`` (all valid in ``source``) in batches, written through ``writer``; with
    ``refine.method`` direct, the direct mapping's one forward from the Grad-CAM map instead of DDIM."""
    if not samples:
        return
    dataset = GazeDataset(samples, train=False, style="vat", on_error=cfg.dataset.on_error,
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
    direct = refine.method == "direct"
    keep_draws = writer.draws is not None
    title = "direct mapping" if direct else f"GCDR T={refine.T} steps={refine.steps}"
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"refine T={refine.T}", disable=not progress):
            ids = [dataset.samples[i].sample_id for i in batch["index"].tolist()]
            if all(i in writer.done_ids for i in ids):  # written by an earlier run
                continue
            # the whole batch is computed (as in an uninterrupted run); only the persons not yet written are kept
            prior = torch.from_numpy(np.stack([source.heatmap_64(i) for i in ids])).to(device)  # [B, 64, 64]
            context = model.encode(batch["scene"].to(device), batch["head_channel"].to(device),
                                   batch["face"].to(device))
            draws = None
            if direct:
                mean_x0 = model.denoise(*direct_inputs(prior, model.config.scale), context).squeeze(1)
                refined = normalize_heatmaps(mean_x0)  # [B, 64, 64]
            else:
                noises = noise_for_samples(ids, refine.seed, draws=refine.samples, steps=max(num_steps, 1))
                outputs = refine_heatmaps(model, scheduler, context, prior, refine.T, refine.steps, noises,
                                          eta=refine.eta, semantics=refine.semantics, return_draws=keep_draws)
                refined, mean_x0 = outputs[:2]  # [B, 64, 64]
                if keep_draws:  # each draw min-max normalised, rounded as stored: [B, K, 64, 64] float16
                    draws = normalize_heatmaps(outputs[2]).transpose(0, 1).cpu().numpy().astype(np.float16)
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
                image = (before_after_preview(sample, prior[row].cpu().numpy(), refined[row], title,
                                              source.get(sample_id).answer)
                         if writer.wants_preview() else None)
                label = output_label(sample, refined[row], source.get(sample_id))
                if draws is not None:
                    label.draws_64 = draws[row]
                    label.draw_spread = argmax_spread(draws[row], refined[row].astype(np.float16))
                writer.add(label, preview_rgb=image)
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


def predict_with_student(student, samples: list[PersonSample], source: PseudoLabelFolder, writer: PseudoLabelWriter,
                         refine: RefineConfig, cfg: RunConfig, device: torch.device, progress: bool) -> None:
    """Self-training (GCDR's ``baseline`` teacher): ``student``'s min-max normalised heatmap of every person of
    ``samples``, whatever its Grad-CAM (the source only lends answer and key noun for lineage; a student that
    reads the Grad-CAM as an input, VAT-GC = GCDR's ``baseline_gradcam`` teacher, also takes its map from it)."""
    if not samples:
        return
    from gcdr.students.config import student_config

    # a student reading input maps (VAT-GC: GCDR's baseline_gradcam teacher) reads the source's Grad-CAM, after
    # any configured student.gradcam_folders
    maps = student.input_maps(student_config(cfg), source)
    dataset = dataset_for_student(samples, student, cfg.dataset.on_error, cfg.dataset.format, maps)
    if cfg.dataset.on_error == "skip":
        dataset.drop_unreadable()
    heatmaps, _ = predict_dataset(student, dataset, refine.batch_size, device, progress=progress)
    predicted = {s.sample_id: i for i, s in enumerate(dataset.samples)}
    for sample in samples:
        label = source.get(sample.sample_id) if sample.sample_id in source else None
        if sample.sample_id not in predicted:  # image missing or unreadable (on_error: skip)
            writer.add(output_label(sample, np.zeros((64, 64), np.float32), label, False, "image_unreadable"))
            continue
        heatmap = heatmaps[predicted[sample.sample_id]]
        reason = invalid_reason(heatmap)
        if reason:
            writer.add(output_label(sample, np.zeros((64, 64), np.float32), label, False, f"refined_{reason}"))
            continue
        image = (before_after_preview(sample, label.heatmap_64 if label else heatmap, normalize_heatmap(heatmap),
                                      "self-training", label.answer if label else "") if writer.wants_preview() else None)
        writer.add(output_label(sample, normalize_heatmap(heatmap), label), preview_rgb=image)


# ------------------------------------------------------------------------------------------ records
def output_label(sample: PersonSample, heatmap_64: np.ndarray, source: PseudoLabel | None,
                 valid: bool = True, reason: str = "", raw_map: np.ndarray | None = None) -> PseudoLabel:
    """A label for ``sample`` that carries the source's answer / key noun over (lineage)."""
    return PseudoLabel(
        sample_id=sample.sample_id, heatmap_64=np.asarray(heatmap_64, np.float32), valid=valid,
        invalid_reason=reason, raw_map=raw_map, answer=source.answer if source else "",
        key_noun=source.key_noun if source else "", image_path=sample.image_path,
        head_box_xyxy_px=tuple(float(v) for v in sample.head_box_xyxy_px), source=sample.source)
