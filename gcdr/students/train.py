"""Stage 3: train a student on labeled + pseudo-labeled persons (``make train-student``), top to bottom.

Training set: the labeled persons of the split (ground-truth Gaussians) plus the unlabeled persons that have a
valid map in the pseudo-label folder (the map is their target; ``pseudo_draws: per_pass``: one of its K refined
draws per epoch; ``pseudo_confidence``: weighted or filtered by the folder's draw_spread); no folder = the labeled
persons only; ratio 1.0 = every train person labeled. The student is whichever ``student.model`` names
(gcdr.students.registry), its loss its own (gcdr.students.recipe.student_loss). A run trains for a fixed budget (epochs x steps) and reports
the last model: no checkpoint is chosen by test metrics. The test split is scored once, after the last epoch
(``eval_every`` > 0 adds intermediate test rows to history.csv for plotting; they choose nothing).

The output folder (gcdr.paths.student_dir) is claimed with gcdr.stage_output.StageOutput for the run's request
(:func:`run_request`: the ``student:`` section but its budget, the split, the dataset, the pseudo-label folder
and its content fingerprint): a folder of another request is refused with one line (``--restart`` replaces
it); a run of the same request resumes from last.pt at the epoch it reached, or is left alone when it finished
within the budget asked for (the budget may grow between a run and its resumption). Writes

    last.pt          {"model_config", "state_dict", optimiser / scheduler state, history, ...}, every epoch
    history.csv, tb/ per-epoch table and TensorBoard logs
    model/           the last model as config.json + model.safetensors (gcdr.students.student), at the end
    metrics.json     {"final": test metrics of the last model, training-set counts}; written last
    request.json, provenance.json   (gcdr.stage_output)

CPU, GPU, several GPUs, mixed precision and gradient accumulation come from Accelerate alone (every process
takes its own batches, so the effective batch is batch_size x processes). The pseudo-label folder must be final
and hold every unlabeled person (gcdr.pseudolabels.check_final). With ``dataset.on_error: skip`` unreadable
test images are left out before evaluation and counted (``n_skipped``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm import tqdm

from gcdr import paths
from gcdr.atomic import write_csv_atomic, write_json_atomic
from gcdr.config import RunConfig
from gcdr.data import load_samples
from gcdr.data.dataset import GazeDataset, enlarges_head_boxes
from gcdr.errors import UserError
from gcdr.fingerprints import scored_persons_fingerprint
from gcdr.processes import cpu_processes
from gcdr.pseudolabels import PseudoLabelFolder, check_final
from gcdr.stage_output import StageOutput
from gcdr.students.config import StudentConfig, student_config
from gcdr.students.evaluation import METRIC_KEYS, evaluate_student
from gcdr.students.export import read_checkpoint, save_checkpoint
from gcdr.students.feature_cache import CachedFeatureDataset, FeatureCache
from gcdr.students.recipe import (
    EpochBatchSampler,
    TrainingSet,
    apply_confidence,
    assemble_training_set,
    check_pseudo_options,
    lr_lambda,
    student_loss,
)
from gcdr.students.registry import student_from_config
from gcdr.students.student import Student

log = logging.getLogger("gcdr.train_student")

STAGE = "train_student"
# Fields that may change between a run and its resumption (the budget); any other change is another request.
BUDGET_FIELDS = ("epochs", "max_steps", "eval_every", "num_workers", "cpu_threads")
LABELED_DATASET_FORMATS = ("gazefollow", "videoattentiontarget", "childplay", "goo")


class NoTestLabelsError(UserError, ValueError):
    """The configured dataset has no test labels to train and evaluate a student on."""


def open_pseudo(cfg: dict[str, Any], pseudo: str | None) -> tuple[PseudoLabelFolder | None, str | None]:
    """(the pseudo-label folder, its content fingerprint), or (None, None) without one.

    The folder must be final and hold every person of the unlabeled split (gcdr.pseudolabels.check_final):
    a folder its stage did not finish, or one made for other persons, raises a one-line error.
    """
    if pseudo is None:
        return None, None
    folder = PseudoLabelFolder(pseudo)
    ratio = float(cfg["split"]["ratio"])
    expected = [s.sample_id for s in load_samples(cfg, "unlabeled")] if ratio < 1.0 else []
    summary = check_final(folder.folder, expected, folder.sample_ids, "split 'unlabeled'")
    return folder, summary["fingerprint"]


def run_request(student: StudentConfig, cfg: dict[str, Any], pseudo: str | None,
                pseudo_fingerprint: str | None = None, input_maps_fingerprints: list[str] | None = None,
                test_fingerprint: str | None = None) -> dict[str, Any]:
    """What defines a run (everything but the budget): the StageOutput request, also stored in last.pt as its
    ``fingerprint``. ``pseudo_fingerprint``: the pseudo-label folder's content fingerprint; absent without one.
    ``input_maps_fingerprints``: those of the student's input-map folders (VAT-GC's Grad-CAM); absent without.
    ``test_fingerprint``: the test persons it is scored on (gcdr.fingerprints.scored_persons_fingerprint), so a
    finished run is not taken as finished on another test split (e.g. a SynthGaze drawn with more test persons)."""
    values = {k: v for k, v in dataclasses.asdict(student).items() if k not in BUDGET_FIELDS}
    run = {"student": values, "split": dict(cfg.get("split") or {}), "pseudo": str(pseudo or "none"),
           "dataset": dict(cfg.get("dataset") or {})}
    if test_fingerprint is not None:
        run["test_persons"] = test_fingerprint
    if pseudo:
        run["pseudo_fingerprint"] = pseudo_fingerprint
    if input_maps_fingerprints is not None:
        run["input_maps_fingerprints"] = input_maps_fingerprints
    return run


def training_set(cfg: dict[str, Any], folder: PseudoLabelFolder | None, student: StudentConfig) -> TrainingSet:
    """Labeled + valid pseudo-labeled persons (of ``folder``, or none), weighted or filtered by confidence."""
    ratio = float(cfg["split"]["ratio"])
    labeled = load_samples(cfg, "train" if ratio >= 1.0 else "labeled")
    unlabeled = load_samples(cfg, "unlabeled") if folder is not None and ratio < 1.0 else []
    return apply_confidence(assemble_training_set(labeled, unlabeled, folder, student.unlabeled_inout), folder,
                            student)


def make_datasets(cfg: RunConfig, student: StudentConfig, train_set: TrainingSet, folder: PseudoLabelFolder | None,
                  model: Student, accelerator: Accelerator, test_samples: list, input_maps: Any | None = None
                  ) -> tuple[Any, Any]:
    """Train and test datasets (``test_samples``: the test split's persons); with the feature cache (students whose
    backbone is frozen), their cached versions.

    A student that reads per-person input maps (Student.input_maps: VAT-GC's Grad-CAM) gets them in both
    datasets' prior slot (it trains without a pseudo-label folder, see :func:`train_student`); ``input_maps``:
    those maps when already opened."""
    common = dict(style=model.style, scene_size=model.input_size, on_error=cfg.dataset.on_error,
                  enlarge_head_box=enlarges_head_boxes(cfg))  # VAT-style boxes: GazeFollow only
    maps = input_maps if input_maps is not None else model.input_maps(student)
    test_ds = GazeDataset(test_samples, train=False, labeled=True, pseudo=maps, **common)
    use_cache = uses_feature_cache(student)
    train_ds = GazeDataset(train_set.samples, train=not use_cache, labeled=train_set.labeled,
                           pseudo=folder if maps is None else maps, seed=student.seed,
                           pseudo_draws=student.pseudo_draws, prior_weights=train_set.pseudo_weights or None,
                           **common)
    if common["on_error"] == "skip":
        # evaluation must not score a person on another person's image (what a replaced item would be), and
        # the feature cache keys its labels by position: drop unreadable persons now (they are counted)
        for dataset in (test_ds, train_ds) if use_cache else (test_ds,):
            dataset.drop_unreadable()
    if not use_cache:
        return train_ds, test_ds
    cache = FeatureCache(paths.out_root(cfg) / "cache" / "gazelle-features", model.config.backbone, model.input_size)
    datasets = []
    for base, train in ((train_ds, True), (test_ds, False)):
        with accelerator.main_process_first():
            datasets.append(CachedFeatureDataset.build(
                base, model.backbone, cache, train=train, flip=student.cache_flip, seed=student.seed,
                num_workers=student.num_workers, device=accelerator.device, compute=accelerator.is_main_process,
                progress=accelerator.is_main_process))
    return datasets[0], datasets[1]


def uses_feature_cache(student: StudentConfig) -> bool:
    return bool(student.feature_cache and student.student_class.feature_cache)


def finished_result(output: StageOutput, student: StudentConfig) -> dict[str, Any] | None:
    """metrics.json when a run of this request finished within the budget asked for now, else None."""
    path = output.folder / "metrics.json"
    if not output.done() or not path.is_file():
        return None
    written = json.loads(path.read_text())
    if written.get("final", {}).get("epoch", 0) >= student.epochs or (
            student.max_steps and written.get("steps", 0) >= student.max_steps):
        return written
    return None


def train_student(cfg: dict[str, Any], pseudo: str | None = None, out_dir: str | Path | None = None,
                  restart: bool = False) -> dict[str, Any]:
    """Train (or resume, or leave alone when finished) one student run; returns the content of metrics.json.

    cfg: the whole config; pseudo: a pseudo-label folder or None / "none"; out_dir: default
    gcdr.paths.student_dir; restart: empty the output folder first (another request's output, a partial run).
    """
    cfg = RunConfig(cfg)
    student = student_config(cfg)
    pseudo = None if pseudo in (None, "", "none") else str(pseudo)
    out_dir = Path(out_dir or paths.student_dir(cfg, student.model, pseudo))
    accelerator = Accelerator(cpu=cpu_processes(), mixed_precision=student.mixed_precision,
                              gradient_accumulation_steps=student.grad_accum or 1)
    main = accelerator.is_main_process
    if student.cpu_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(student.cpu_threads)
    maps = student.student_class.input_maps(student)  # VAT-GC's Grad-CAM folders, opened before anything is claimed
    if pseudo is not None and maps is not None:
        # the dataset's prior slot carries this student's input maps: there is none left for pseudo-labels
        raise UserError(f"student.model {student.model!r} reads its Grad-CAM input where pseudo-labels would go: "
                        f"train it with PSEUDO=none (--pseudo none), got {pseudo}")
    folder, pseudo_fingerprint = open_pseudo(cfg, pseudo)  # refused unless final and complete
    check_pseudo_options(student, folder)  # per_pass / confidence without draws: refused before the claim
    if cfg.dataset.format not in LABELED_DATASET_FORMATS:
        raise NoTestLabelsError(f"dataset.format {cfg.dataset.format!r} has no test labels to train / evaluate a "
                                "student")
    test_samples = load_samples(cfg, "test")
    request = run_request(student, cfg, pseudo, pseudo_fingerprint, maps.fingerprints() if maps is not None else None,
                          scored_persons_fingerprint(test_samples))
    # the main process claims the folder for all processes (lock, request, provenance)
    with StageOutput(out_dir, STAGE, request, config=cfg, restart=restart, main_process=main) as output:
        finished = finished_result(output, student)
        if finished is not None:
            log.info("%s: already finished (epoch %d); --restart to train again", out_dir, finished["final"]["epoch"])
            return finished
        return _train(cfg, student, pseudo, folder, output, accelerator, request, restart, test_samples, maps)


def _train(cfg: RunConfig, student: StudentConfig, pseudo: str | None, folder: PseudoLabelFolder | None,
           output: StageOutput, accelerator: Accelerator, request: dict[str, Any], restart: bool,
           test_samples: list, input_maps: Any | None = None) -> dict[str, Any]:
    main = accelerator.is_main_process
    out_dir = output.folder
    last_path = out_dir / "last.pt"
    resume = None
    if last_path.exists() and not restart:
        resume = read_checkpoint(last_path)

    # ---- the student, its data, its optimiser (the order of random draws is part of the result)
    torch.manual_seed(student.seed)
    np.random.seed(student.seed)
    with accelerator.main_process_first():  # may write the tiny DINOv2 once
        model = student_from_config(student, paths.out_root(cfg))
    config = model.model_config()
    if student.init_weights and resume is None:
        report = model.load_init_weights(student.init_weights)
        log.info("init weights %s: %d loaded, %d missing, %d unexpected", student.init_weights, len(report.loaded),
                 len(report.missing), len(report.unexpected))
    train_set = training_set(cfg, folder, student)
    train_ds, test_ds = make_datasets(cfg, student, train_set, folder, model, accelerator, test_samples, input_maps)

    loader_args = dict(num_workers=student.num_workers, pin_memory=accelerator.device.type == "cuda")
    own_train = model.own_batches(train_ds, student.batch_size, train=True, cfg=student)  # clip students
    if own_train is None:
        sampler = EpochBatchSampler(train_set.labeled_indices, train_set.unlabeled_indices, student.batch_size,
                                    student.labeled_per_batch, student.steps_per_epoch, student.seed)
        test_loader = DataLoader(test_ds, batch_size=student.batch_size, shuffle=False, **loader_args)
    else:
        if accelerator.num_processes > 1:  # each process would get other chunks of the same clips
            raise UserError(f"student.model {student.model!r} trains on chunks of clips: run it in one process")
        train_ds, sampler = own_train
        test_ds, test_sampler = model.own_batches(test_ds, student.batch_size, train=False, cfg=student)
        test_loader = DataLoader(test_ds, batch_sampler=test_sampler, **loader_args)
    train_loader = DataLoader(train_ds, batch_sampler=sampler, **loader_args)
    optimizer = torch.optim.Adam(model.parameter_groups(student), lr=student.learning_rate,
                                 weight_decay=student.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(student, student.epochs))

    start_epoch, global_step, history = 0, 0, []
    if resume is not None:
        model.load_trainable_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch, global_step, history = resume["epoch"], resume["global_step"], resume["history"]
        log.info("resuming %s from epoch %d (step %d)", out_dir, start_epoch, global_step)
    runner, optimizer, train_loader, test_loader = accelerator.prepare(model, optimizer, train_loader, test_loader)

    dataset_format = cfg.dataset.format
    details = dict(model_config=config, pseudo=pseudo or "none", pseudo_provenance=folder.provenance if folder else None,
                   pseudo_fingerprint=request.get("pseudo_fingerprint"), training_set=train_set.counts,
                   student=dataclasses.asdict(student), processes=accelerator.num_processes,
                   mixed_precision=accelerator.mixed_precision, device=str(accelerator.device))
    output.start(**details)
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tb"))
        log.info("training %s (%s) on %d persons (%s), %d steps/epoch x %d epochs, batch %d x %d process(es)",
                 student.model, config["backbone"], len(train_set.samples), train_set.counts, len(sampler),
                 student.epochs, student.batch_size, accelerator.num_processes)

    # ---- the loop: one optimiser step per batch, the scheduler once per epoch
    train_time = 0.0
    samples_seen = 0
    stopped_by_max_steps = False
    for epoch in range(start_epoch, student.epochs):
        if student.max_steps and global_step >= student.max_steps:
            break
        # the prepared loader keeps its own epoch counter (0 in a new process) and passes it on to the
        # sampler when iterated: set it, so that a resumed epoch draws the batches of an uninterrupted run
        train_loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        runner.train()
        epoch_start = time.perf_counter()
        losses, n_batches = [], 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{student.epochs}", disable=not main)
        for batch in bar:
            with accelerator.accumulate(runner):
                with accelerator.autocast():
                    loss, logs = student_loss(runner, batch, student)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            global_step += 1
            n_batches += 1
            samples_seen += len(batch["index"]) * accelerator.num_processes
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"loss is {losses[-1]} at step {global_step} (epoch {epoch + 1})")
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            if writer is not None:
                writer.add_scalar("train/loss", losses[-1], global_step)
            if student.max_steps and global_step >= student.max_steps:
                stopped_by_max_steps = True
                break
        epoch_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        epoch_time = time.perf_counter() - epoch_start
        train_time += epoch_time
        last_epoch = epoch + 1 == student.epochs or stopped_by_max_steps
        row = {"epoch": epoch + 1, "step": global_step, "lr": epoch_lr,
               "train_loss": float(np.mean(losses)) if losses else float("nan"), "batches": n_batches,
               "epoch_time_s": round(epoch_time, 2)}
        metrics = None
        if last_epoch or (student.eval_every and (epoch + 1) % student.eval_every == 0):
            eval_start = time.perf_counter()
            metrics = evaluate_student(runner, test_loader, test_ds, accelerator, student.protocol, dataset_format)
            row.update({k: metrics[k] for k in METRIC_KEYS if k in metrics})
            row["eval_time_s"] = round(time.perf_counter() - eval_start, 2)
            if main:
                log.info("epoch %d: loss %.4g, test auc %.4f avg_l2 %.4f min_l2 %.4f", epoch + 1, row["train_loss"],
                         metrics["auc"], metrics["avg_l2"], metrics["min_l2"])
        history.append(row)
        if main:
            # history.csv first, last.pt second, metrics.json (below) last: a kill anywhere leaves history.csv
            # ahead of or equal to last.pt, and the resumed run rewrites it from last.pt's own history
            write_csv_atomic(out_dir / "history.csv", history)
            save_checkpoint(last_path, accelerator.unwrap_model(runner), epoch=epoch + 1, global_step=global_step,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), history=history,
                            fingerprint=request, stopped_by_max_steps=stopped_by_max_steps, metrics=metrics)
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    writer.add_scalar(f"epoch/{key}", value, epoch + 1)
        accelerator.wait_for_everyone()
        if stopped_by_max_steps:
            break

    # ---- the reported model and its metrics
    result = {"final": history[-1] if history else {}, "student": student.model, "backbone": config["backbone"],
              "pseudo": pseudo or "none", "ratio": cfg["split"]["ratio"], "training_set": train_set.counts,
              "steps": global_step, "train_time_s": round(train_time, 2),
              "train_samples_per_s": round(samples_seen / train_time, 2) if train_time else None,
              "feature_cache": uses_feature_cache(student)}
    if main:
        accelerator.unwrap_model(runner).save_pretrained(out_dir / "model")
        write_json_atomic(out_dir / "metrics.json", result)
        writer.close()
        output.finish(**details, steps=global_step, final=result["final"])
        log.info("done: %s", out_dir / "metrics.json")
    return result
