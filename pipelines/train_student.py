"""Stage 3: train a student (VAT or Gaze-LLE) on labeled + pseudo-labeled persons.

    make train-student RATIO=0.1 STUDENT=vat|gazelle PSEUDO=<pseudo-label folder>|none

Training set: the labeled persons of the split (ground-truth Gaussians) plus the unlabeled persons that
have a valid map in the pseudo-label folder (the map is their target); PSEUDO=none trains on the labeled
persons only; RATIO=1.0 = every train person labeled (full supervision). Loss: VAT masked MSE x 10000,
Gaze-LLE BCE (gcdr.students.training). A run trains for a fixed budget (epochs x steps) and reports the
last model: no checkpoint is chosen by test metrics. The test split is scored once, after the last epoch
(``eval_every`` > 0 adds intermediate test rows to history.csv for plotting; they choose nothing).
Writes to ``gcdr.paths.student_dir``:

    last.pt                  checkpoint ({"model_config", "state_dict", optimiser / scheduler state, history})
    history.csv, tb/         per-epoch table and TensorBoard logs
    metrics.json             {"final": test metrics of the last model, training-set counts}; written last:
                             a run without it is not finished, whatever else is there
    provenance.json

CPU, GPU, several GPUs, mixed precision and gradient accumulation come from Accelerate alone
(``accelerate launch --num_processes 2 --mixed_precision bf16 -m pipelines.train_student ...``; every
process takes its own batches, so the effective batch is batch_size x processes). A run resumes from
last.pt at the epoch it reached; a finished run is left alone (--restart starts over).

The pseudo-label folder must be final and hold every unlabeled person (gcdr.pseudolabels.check_final: a
folder its stage did not finish is refused with one line saying which stage to finish), and its content
fingerprint is part of the run's fingerprint: a run made with another version of the folder is not resumed
or taken as finished. The main process locks the output folder for the run (gcdr.locking). With
``dataset.on_error: skip`` unreadable test images are left out before evaluation and counted (``n_skipped``).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from gcdr.checkpoints import load_torch_file
from gcdr.config import add_config_args, config_from_args
from gcdr.data import load_samples
from gcdr.data.dataset import GazeDataset, enlarges_head_boxes
from gcdr.locking import folder_lock, run_stage
from gcdr.metrics import evaluate
from gcdr.provenance import write_provenance
from gcdr.pseudolabels import PseudoLabelFolder, check_final
from gcdr.students.feature_cache import CachedFeatureDataset, FeatureCache
from gcdr.students.gazelle import GazeLLE
from gcdr.students.training import (
    BatchStudent,
    EpochBatchSampler,
    StudentConfig,
    TrainingSet,
    assemble_training_set,
    build_student,
    load_init_weights,
    lr_lambda,
    model_config,
    predict_batch,
    save_checkpoint,
    student_config,
    student_loss,
)

log = logging.getLogger("gcdr.train_student")

# Fields that may change between a run and its resumption (the budget); any other change needs --restart.
BUDGET_FIELDS = ("epochs", "max_steps", "eval_every", "num_workers", "cpu_threads")


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


def training_set(cfg: dict[str, Any], folder: PseudoLabelFolder | None, student: StudentConfig) -> TrainingSet:
    """Labeled + valid pseudo-labeled persons (of ``folder``, or none)."""
    ratio = float(cfg["split"]["ratio"])
    labeled = load_samples(cfg, "train" if ratio >= 1.0 else "labeled")
    unlabeled = load_samples(cfg, "unlabeled") if folder is not None and ratio < 1.0 else []
    return assemble_training_set(labeled, unlabeled, folder, student.unlabeled_inout)


def make_datasets(cfg: dict[str, Any], student: StudentConfig, train_set: TrainingSet, folder, model,
                  config: dict[str, Any], accelerator: Accelerator) -> tuple[Any, Any]:
    """Train and test datasets; with the Gaze-LLE feature cache, their cached versions."""
    dataset_cfg = cfg.get("dataset") or {}
    common = dict(style=student.style, scene_size=student.scene_size, on_error=dataset_cfg.get("on_error", "raise"),
                  enlarge_head_box=enlarges_head_boxes(cfg))  # VAT: GazeFollow only
    test_ds = GazeDataset(load_samples(cfg, "test"), train=False, labeled=True, **common)
    use_cache = student.feature_cache and isinstance(model, GazeLLE)
    train_ds = GazeDataset(train_set.samples, train=not use_cache, labeled=train_set.labeled, pseudo=folder,
                           seed=student.seed, **common)
    if common["on_error"] == "skip":
        # evaluation must not score a person on another person's image (what a replaced item would be), and
        # the feature cache keys its labels by position: drop unreadable persons now (they are counted)
        for dataset in (test_ds, train_ds) if use_cache else (test_ds,):
            dataset.drop_unreadable()
    if not use_cache:
        return train_ds, test_ds
    cache = FeatureCache(paths.out_root(cfg) / "cache" / "gazelle-features", config["backbone"],
                         config["input_size"])
    datasets = []
    for base, train in ((train_ds, True), (test_ds, False)):
        with accelerator.main_process_first():
            datasets.append(CachedFeatureDataset.build(
                base, model.backbone, cache, train=train, flip=student.cache_flip, seed=student.seed,
                num_workers=student.num_workers, device=accelerator.device, compute=accelerator.is_main_process,
                progress=accelerator.is_main_process))
    return datasets[0], datasets[1]


@torch.no_grad()
def evaluate_student(model, loader, dataset, accelerator: Accelerator, student: StudentConfig,
                     dataset_format: str) -> dict[str, Any]:
    """Test metrics (gcdr.metrics.evaluate) of the student on ``loader``; every process returns them.

    Each person is scored once, on its own image: an item a skip-mode dataset replaced by another (its image
    became unreadable) is left out and counted in ``n_skipped``, with the persons dropped before."""
    model.eval()
    indices, heatmaps, inouts = [], [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            heatmap, inout = predict_batch(model, batch)
        if inout is None:
            inout = torch.zeros(len(heatmap), device=heatmap.device)
        index, heatmap, inout = accelerator.gather_for_metrics((batch["index"], heatmap, inout))
        indices.append(index.cpu())
        heatmaps.append(heatmap.float().cpu())
        inouts.append(inout.float().cpu())
    order = torch.cat(indices).tolist()
    first = sorted({i: row for row, i in reversed(list(enumerate(order)))}.values())  # rows of distinct items
    samples = [dataset.sample(order[row]) for row in first]
    inout_scores = torch.cat(inouts).numpy()[first] if dataset_format == "videoattentiontarget" else None
    base = getattr(dataset, "base", dataset)  # a CachedFeatureDataset's GazeDataset
    unreadable = len(getattr(base, "skipped", [])) + len(dataset) - len(first)
    metrics = evaluate(torch.cat(heatmaps).numpy()[first], samples, inout_scores=inout_scores,
                       dataset=dataset_format, protocol=student.protocol, unreadable=unreadable)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    write_csv_atomic(path, history)


def fingerprint(student: StudentConfig, cfg: dict[str, Any], pseudo: str | None,
                pseudo_fingerprint: str | None = None) -> dict[str, Any]:
    """What defines a run (everything but the budget): a resumed run must match it. ``pseudo_fingerprint``:
    the content fingerprint of the pseudo-label folder (gcdr.pseudolabels.content_fingerprint); absent for a
    run without one, so that labeled-only runs of older versions still resume."""
    values = {k: v for k, v in dataclasses.asdict(student).items() if k not in BUDGET_FIELDS}
    run = {"student": values, "split": dict(cfg.get("split") or {}), "pseudo": str(pseudo or "none"),
           "dataset": dict(cfg.get("dataset") or {})}
    if pseudo:
        run["pseudo_fingerprint"] = pseudo_fingerprint
    return run


def train_student(cfg: dict[str, Any], pseudo: str | None = None, out_dir: str | Path | None = None,
                  restart: bool = False) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one student run; returns the content of metrics.json."""
    student = student_config(cfg)
    pseudo = None if pseudo in (None, "", "none") else str(pseudo)
    out_dir = Path(out_dir or paths.student_dir(cfg, student.model, pseudo))
    accelerator = Accelerator(mixed_precision=student.mixed_precision,
                              gradient_accumulation_steps=student.grad_accum or 1)
    main = accelerator.is_main_process
    if student.cpu_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(student.cpu_threads)
    folder, pseudo_fingerprint = open_pseudo(cfg, pseudo)  # refused unless final and complete
    run_id = fingerprint(student, cfg, pseudo, pseudo_fingerprint)
    # the main process holds the output folder's lock for all processes (and clears a killed run's temporaries)
    with folder_lock(out_dir, enabled=main):
        return _train_student(cfg, student, pseudo, folder, out_dir, accelerator, run_id, restart)


def _train_student(cfg: dict[str, Any], student: StudentConfig, pseudo: str | None,
                   folder: PseudoLabelFolder | None, out_dir: Path, accelerator: Accelerator,
                   run_id: dict[str, Any], restart: bool) -> dict[str, Any]:
    main = accelerator.is_main_process
    resume = None
    last_path = out_dir / "last.pt"
    if last_path.exists() and not restart:
        resume = load_torch_file(last_path, map_location="cpu", weights_only=False,
                                 hint="delete it or pass --restart to train from scratch")
        if resume.get("fingerprint") != run_id:
            previous = resume.get("fingerprint") if isinstance(resume.get("fingerprint"), dict) else {}
            changed = sorted(k for k in {*run_id, *previous} if previous.get(k) != run_id.get(k))
            raise SystemExit(f"{last_path} belongs to a run with other settings ({', '.join(changed)} changed); "
                             "use --restart to start over (or another OUT)")
        metrics_path = out_dir / "metrics.json"
        finished = resume["epoch"] >= student.epochs or (student.max_steps and resume["global_step"] >= student.max_steps)
        written = _read_json(metrics_path)  # {} when absent
        if finished and written.get("final", {}).get("epoch") == resume["epoch"]:
            log.info("%s: already finished (epoch %d); --restart to train again", out_dir, resume["epoch"])
            return written

    torch.manual_seed(student.seed)
    np.random.seed(student.seed)
    with accelerator.main_process_first():  # may write the tiny DINOv2 once
        config = model_config(student, paths.out_root(cfg))
    model = build_student(config)
    if student.init_weights and resume is None:
        load_init_weights(model, student.init_weights)
    train_set = training_set(cfg, folder, student)
    train_ds, test_ds = make_datasets(cfg, student, train_set, folder, model, config, accelerator)

    sampler = EpochBatchSampler(train_set.labeled_indices, train_set.unlabeled_indices, student.batch_size,
                                student.labeled_per_batch, student.steps_per_epoch, student.seed)
    loader_args = dict(num_workers=student.num_workers, pin_memory=accelerator.device.type == "cuda")
    train_loader = DataLoader(train_ds, batch_sampler=sampler, **loader_args)
    test_loader = DataLoader(test_ds, batch_size=student.batch_size, shuffle=False, **loader_args)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=student.learning_rate, weight_decay=student.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(student, student.epochs))

    start_epoch, global_step, history = 0, 0, []
    if resume is not None:
        if isinstance(model, GazeLLE):
            model.load_decoder_state_dict(resume["state_dict"])
        else:
            model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch, global_step, history = resume["epoch"], resume["global_step"], resume["history"]
        log.info("resuming %s from epoch %d (step %d)", out_dir, start_epoch, global_step)
    runner = BatchStudent(model)  # forward(batch): what DDP wraps
    runner, optimizer, train_loader, test_loader = accelerator.prepare(runner, optimizer, train_loader, test_loader)

    dataset_format = (cfg.get("dataset") or {}).get("format", "gazefollow")
    if dataset_format not in ("gazefollow", "videoattentiontarget"):
        raise SystemExit(f"dataset.format {dataset_format!r} has no test labels to train / evaluate a student")
    if main:
        write_provenance(out_dir, "train_student", cfg, model_config=config, pseudo=pseudo or "none",
                         pseudo_provenance=folder.provenance if folder else None,
                         pseudo_fingerprint=run_id.get("pseudo_fingerprint"), training_set=train_set.counts,
                         student=dataclasses.asdict(student), processes=accelerator.num_processes,
                         mixed_precision=accelerator.mixed_precision, device=str(accelerator.device))
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tb"))
    if main:
        log.info("training %s (%s) on %d persons (%s), %d steps/epoch x %d epochs, batch %d x %d process(es)",
                 student.model, config["backbone"], len(train_set.samples), train_set.counts, len(sampler),
                 student.epochs, student.batch_size, accelerator.num_processes)

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
            metrics = evaluate_student(runner, test_loader, test_ds, accelerator, student, dataset_format)
            row.update({k: metrics[k] for k in ("auc", "avg_l2", "min_l2", "ap") if k in metrics})
            row["eval_time_s"] = round(time.perf_counter() - eval_start, 2)
            if main:
                log.info("epoch %d: loss %.4g, test auc %.4f avg_l2 %.4f min_l2 %.4f", epoch + 1, row["train_loss"],
                         metrics["auc"], metrics["avg_l2"], metrics["min_l2"])
        history.append(row)
        if main:
            unwrapped = accelerator.unwrap_model(runner).student
            # history.csv first, last.pt second, metrics.json (below) last: a kill anywhere leaves history.csv
            # ahead of or equal to last.pt, and the resumed run rewrites it from last.pt's own history
            write_history(out_dir / "history.csv", history)
            save_checkpoint(last_path, unwrapped, config, epoch=epoch + 1, global_step=global_step,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), history=history,
                            fingerprint=run_id, stopped_by_max_steps=stopped_by_max_steps, metrics=metrics)
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    writer.add_scalar(f"epoch/{key}", value, epoch + 1)
        accelerator.wait_for_everyone()
        if stopped_by_max_steps:
            break

    result = {"final": history[-1] if history else {}, "student": student.model, "backbone": config["backbone"],
              "pseudo": pseudo or "none", "ratio": cfg["split"]["ratio"], "training_set": train_set.counts,
              "steps": global_step, "train_time_s": round(train_time, 2),
              "train_samples_per_s": round(samples_seen / train_time, 2) if train_time else None,
              "feature_cache": bool(student.feature_cache and student.model == "gazelle")}
    if main:
        write_json_atomic(out_dir / "metrics.json", result)
        writer.close()
        log.info("done: %s", out_dir / "metrics.json")
    return result


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--pseudo", default="none", help="pseudo-label folder, or none = labeled persons only")
    parser.add_argument("--out", default=None, help="output folder (default: gcdr.paths.student_dir)")
    parser.add_argument("--epochs", type=int, default=None, help="override student.epochs")
    parser.add_argument("--max-steps", type=int, default=None, help="override student.max_steps")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="override student.steps_per_epoch")
    parser.add_argument("--restart", action="store_true", help="ignore last.pt and train from scratch")
    args = parser.parse_args(argv)
    for option, key in (("epochs", "epochs"), ("max_steps", "max_steps"), ("steps_per_epoch", "steps_per_epoch")):
        if getattr(args, option) is not None:
            args.overrides.append(f"student.{key}={getattr(args, option)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    train_student(cfg, args.pseudo, args.out, args.restart)


if __name__ == "__main__":
    run_stage(main)
