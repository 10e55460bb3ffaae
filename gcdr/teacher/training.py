"""Training the GCDR diffusion teacher (`make train-teacher`), readable top to bottom: the request that
defines a run, the batches, one training step, validation, checkpoints, then the loop.

Supervised (docs/method.md#prediction-target-and-training-loss): every labeled in-frame person of the split; each
step noises the Gaussian ground truth to t ~ U{0..499} (scaled space, one eps per person), the network predicts
x0 from the clamped [0, 1]-mapped input, loss = per-person 64x64 MSE averaged x 10000 (Adam, no schedule).
Mean teacher (``teacher.mean_teacher: true``, docs/method.md#mean-teacher): batches of unlabeled persons + labeled
ones, each person in GCDR's two augmented views (own head-box jitter and colour, shared crop and flip); an
EMA copy of the model samples x0 from pure noise (DDIM, ``teacher_steps``) on view 2 and the student's
one-shot prediction from pure noise on view 1 must match it (KL over the 4096 pixels, weight ramped up over
``consistency_rampup_epochs``); labeled rows keep the supervised loss. The model saved is the student.

Validation every ``val_every`` epochs (and after the last): DDIM with ``val_steps`` steps from pure noise
(fixed noise per person, so epochs compare) for the first ``val_max_persons`` persons of the TEST split,
scored with gcdr.metrics.evaluate (AUC, avg / min L2). The test split is used, as GCDR does, because
holding out part of a 10 % labeled split would shrink it further; nothing is selected on these numbers
(the exported model is always the last epoch's), so they are a learning curve, not a tuned result.

The output folder (gcdr.stage_output.StageOutput, stage "train-teacher")::

    model/          the latest weights, GazeDiffusionTeacher.save_pretrained (what `make refine` loads)
    checkpoint.pt   model, EMA model, optimiser, epoch, step, history (atomic, every epoch): the resume point
    log.csv, tb/    one row per epoch (losses, EMA decay, consistency weight, validation), TensorBoard
    request.json, provenance.json

The request (:func:`teacher_request`) is the ``teacher:`` section but its budget (``BUDGET_FIELDS``: epochs or
train_steps, validation, workers, threads may change between runs) and the persons trained on (the labeled split
file's sha256 and the persons' fingerprint). Another request on the folder is refused with one line naming what
differs (``--restart`` empties it). A run restarts from checkpoint.pt at the next epoch; randomness is
re-derived from (seed, epoch, process) at the start of every epoch, so a resumed run continues as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from gcdr.atomic import atomic_path, write_csv_atomic
from gcdr.config import RunConfig
from gcdr.data import load_samples
from gcdr.data.dataset import GazeDataset, enlarges_head_boxes, gaze_collate
from gcdr.errors import UserError
from gcdr.fingerprints import file_sha256, samples_fingerprint
from gcdr.heatmaps import normalize_heatmaps
from gcdr.metrics import evaluate
from gcdr.paths import split_files
from gcdr.processes import cpu_processes
from gcdr.pseudolabels import PseudoLabelFolder, check_final
from gcdr.stage_output import StageOutput, request_differences
from gcdr.students.vat import heatmap_mse_loss
from gcdr.teacher.config import TeacherConfig
from gcdr.teacher.diffusion import (
    direct_inputs,
    make_ddim_scheduler,
    make_train_scheduler,
    noise_for_samples,
    sample_from_noise,
    training_inputs,
)
from gcdr.teacher.mean_teacher import (
    TwoStreamBatchSampler,
    consistency_loss,
    consistency_weight,
    make_ema_teacher,
    update_ema,
)
from gcdr.teacher.model import GazeDiffusionTeacher

log = logging.getLogger("gcdr.train_teacher")

STAGE = "train-teacher"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_DIR = "model"
HISTORY_FILE = "log.csv"
# Fields that may change when a run is resumed (the budget); any other change needs --restart.
BUDGET_FIELDS = ("epochs", "train_steps", "val_every", "val_split", "val_steps", "val_max_persons", "num_workers",
                 "cpu_threads")


class TeacherCheckpointError(UserError, ValueError):
    """checkpoint.pt was written with other teacher settings than the folder's request; one line."""


# ------------------------------------------------------------------------------------------- the request
def fingerprint(teacher: TeacherConfig) -> dict[str, Any]:
    """What defines a teacher run (not its budget); compared through gcdr.stage_output.request_differences, so
    checkpoints written before a setting existed still resume at its old value (stage_output.LATER_DEFAULTS)."""
    kept = {k: v for k, v in dataclasses.asdict(teacher).items() if k not in BUDGET_FIELDS}
    if teacher.mean_teacher:  # one-view mean-teacher checkpoints (before GCDR's two views) must not resume
        kept["mean_teacher_views"] = 2
    return kept


def teacher_request(cfg: RunConfig, teacher: TeacherConfig, labeled: list, unlabeled: list) -> dict[str, Any]:
    """The run's request (gcdr.stage_output): the teacher fingerprint and the persons it trains on.

    labeled / unlabeled: the PersonSamples trained on (unlabeled empty without the mean teacher). GazeFollow-format
    data adds the labeled split file's sha256 (and the unlabeled one's with the mean teacher)."""
    persons: dict[str, Any] = {"labeled": samples_fingerprint(labeled), "enlarge_head_box": enlarges_head_boxes(cfg),
                               "on_error": cfg.dataset.on_error}
    if teacher.mean_teacher:
        persons["unlabeled"] = samples_fingerprint(unlabeled)
    if cfg.dataset.format == "gazefollow":
        use_file, left_file = split_files(cfg)
        persons["labeled_split_sha256"] = file_sha256(use_file)
        if teacher.mean_teacher:
            persons["unlabeled_split_sha256"] = file_sha256(left_file)
    request = {"teacher": fingerprint(teacher), "persons": persons}
    if teacher.objective == "direct":  # the Grad-CAM maps it learns from are an input like the persons
        request["prior_fingerprint"] = check_final(teacher.prior, [s.sample_id for s in labeled],
                                                   what="the labeled persons")["fingerprint"]
    return request


def build_teacher(teacher: TeacherConfig) -> GazeDiffusionTeacher:
    """A fresh teacher; the encoder initialised from ``init_weights`` when given (VAT name + shape matching)."""
    model = GazeDiffusionTeacher(teacher.model_config())
    if teacher.init_weights:
        report = model.load_encoder_weights(teacher.init_weights)
        log.info("encoder initialised from %s: %d tensors loaded, %d encoder keys missing, %d file keys unused",
                 teacher.init_weights, len(report.loaded), len(report.missing), len(report.unexpected))
    return model


# ------------------------------------------------------------------------------------------- batches
def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.default_rng([seed, epoch, rank]).integers(2**62))


def supervised_batches(n_samples: int, batch_size: int, seed: int, epoch: int, rank: int,
                       world: int) -> list[list[int]]:
    """This process's batches of one epoch: a seeded permutation cut into batches, dealt round-robin.

    Every process gets the same number of batches (DDP needs it); a last batch of one person is dropped
    (BatchNorm cannot normalise a single sample).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    batches = [order[i:i + batch_size].tolist() for i in range(0, n_samples, batch_size)]
    if batches and len(batches[-1]) < 2:
        batches.pop()
    per_process = len(batches) // world
    return batches[rank::world][:per_process]


def planned_epochs(teacher: TeacherConfig, batches_per_epoch: int) -> int:
    """The run's epochs: ``teacher.epochs``, or with ``teacher.train_steps`` as many as those steps need (the last
    one is then cut short, so a run is ``train_steps`` optimiser steps at any label ratio)."""
    if teacher.train_steps is None:
        return teacher.epochs
    return math.ceil(teacher.train_steps / batches_per_epoch)


def epoch_batches(two_stream: TwoStreamBatchSampler | None, n_samples: int, teacher: TeacherConfig, epoch: int,
                  rank: int, world: int) -> list[list[int]]:
    """This process's batches of ``epoch``: two-stream (mean teacher) or supervised."""
    if two_stream is not None:
        two_stream.set_epoch(epoch)
        all_batches = list(two_stream)
        return all_batches[rank::world][: len(all_batches) // world]
    return supervised_batches(n_samples, teacher.batch_size, teacher.seed, epoch, rank, world)


# ------------------------------------------------------------------------------------------- one step
@dataclasses.dataclass
class MeanTeacherStep:
    """What the mean-teacher part of a step needs: the EMA model, its DDIM sampler and the consistency."""

    ema: nn.Module
    ddim: Any
    steps: int
    eta: float
    kind: str
    weight: float


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                  train_scheduler, scale: float, mean_teacher: MeanTeacherStep | None = None,
                  backward: Callable[[torch.Tensor], None] | None = None, direct: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on a collated batch already on the device (gcdr.data.dataset.gaze_collate keys).

    Supervised x0 regression on the rows with a target; with ``mean_teacher`` the unlabeled rows start from pure
    noise and the EMA model's DDIM prediction on view 2 supervises every in-frame row (weight x consistency).
    backward: ``accelerator.backward`` in a (multi-process) run, ``loss.backward()`` by default.
    direct: the no-diffusion ablation (teacher.objective direct): the input is the person's Grad-CAM map
    (``prior_heatmap_64``, augmented with the image) at timestep 0, rows without a valid map carry no loss.
    Returns (loss, supervised loss, consistency loss), scalars with their graphs.
    """
    scene, head, face = batch["scene"], batch["head_channel"], batch["face"]
    target, has_target = batch["target_heatmap_64"], batch["has_target"]
    pure_noise = ~batch["is_labeled"] if mean_teacher is not None else None
    if direct:
        x_in, timesteps = direct_inputs(batch["prior_heatmap_64"], scale)
        has_target = has_target & batch["prior_valid"]
    else:
        x_in, timesteps = training_inputs(train_scheduler, target, scale, pure_noise=pure_noise)
    prediction = model(x_in, timesteps, scene, head, face).squeeze(1)  # [B, 64, 64]
    supervised = heatmap_mse_loss(prediction, target, has_target)
    loss = supervised
    consistency = torch.zeros((), device=prediction.device)
    if mean_teacher is not None:
        ema = mean_teacher.ema
        with torch.no_grad():
            ema.train()  # GCDR samples the teacher in train mode (BatchNorm batch statistics)
            # GCDR: the teacher sees view 2 (own jitter and colour; same crop and flip, so the same
            # frame as the student's view 1 and no mapping of its map is needed)
            context_ema = ema.encode(batch["view2_scene"], batch["view2_head_channel"], batch["view2_face"])
            target_ema = sample_from_noise(ema, mean_teacher.ddim, context_ema, mean_teacher.steps,
                                           mean_teacher.eta)  # [B, 64, 64]
        # in-frame rows by the annotation's flag (unknown = -1 counts), as GCDR (docs/method.md#mean-teacher)
        consistency = consistency_loss(prediction, target_ema, batch["inout"] != 0, mean_teacher.kind)
        loss = supervised + mean_teacher.weight * consistency
    optimizer.zero_grad(set_to_none=True)
    if backward is None:
        loss.backward()
    else:
        backward(loss)
    optimizer.step()
    return loss, supervised, consistency


# ------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: GazeDiffusionTeacher, dataset: GazeDataset, teacher: TeacherConfig,
             device: torch.device, progress: bool = True) -> dict[str, float]:
    """DDIM from pure noise (``val_steps`` steps, noise fixed per person) for every person of ``dataset``,
    min-max normalised, scored with gcdr.metrics.evaluate (gazefollow protocol "gcdr")."""
    was_training = model.training
    model.eval()
    ddim = make_ddim_scheduler(model.config)
    loader = DataLoader(dataset, batch_size=teacher.batch_size, shuffle=False, num_workers=teacher.num_workers,
                        collate_fn=gaze_collate)
    heatmaps, indices = [], []
    for batch in tqdm(loader, desc="validate", leave=False, disable=not progress):
        ids = [dataset.samples[i].sample_id for i in batch["index"].tolist()]
        noise = noise_for_samples(ids, teacher.seed, draws=1, steps=teacher.val_steps)[0]
        context = model.encode(batch["scene"].to(device), batch["head_channel"].to(device), batch["face"].to(device))
        x0 = sample_from_noise(model, ddim, context, teacher.val_steps, teacher.eta, noise=noise)  # [B, 64, 64]
        heatmaps.append(normalize_heatmaps(x0).cpu())
        indices += batch["index"].tolist()
    model.train(was_training)
    first = sorted({i: row for row, i in reversed(list(enumerate(indices)))}.values())  # an item replaced by
    samples = [dataset.sample(indices[row]) for row in first]  # another (unreadable image) is scored once
    metrics = evaluate(torch.cat(heatmaps).numpy()[first], samples, dataset="gazefollow", protocol="gcdr",
                       unreadable=len(dataset.skipped) + len(dataset) - len(first))
    return {f"val_{k}": float(metrics[k]) for k in ("auc", "avg_l2", "min_l2", "n")}


def validation_dataset(cfg: RunConfig, teacher: TeacherConfig) -> GazeDataset | None:
    """The first ``val_max_persons`` in-frame persons of the test split (None with val_split "none")."""
    if teacher.val_split in (None, "none"):  # `--set teacher.val_split=none` parses to None
        return None
    if teacher.val_split != "test":
        raise ValueError(f"teacher.val_split must be 'test' or 'none', got {teacher.val_split!r}")
    samples = [s for s in load_samples(cfg, "test") if s.has_gaze]
    if teacher.val_max_persons > 0:
        samples = samples[: teacher.val_max_persons]
    on_error = cfg.dataset.on_error
    if not samples:
        return None
    dataset = GazeDataset(samples, train=False, style="vat", labeled=True, on_error=on_error,
                          enlarge_head_box=enlarges_head_boxes(cfg))
    if on_error == "skip":
        dataset.drop_unreadable()  # never score a person on another person's image
    return dataset if len(dataset) else None


# ------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(out_dir: Path, model: GazeDiffusionTeacher, ema: GazeDiffusionTeacher | None, optimizer,
                    teacher: TeacherConfig, epoch: int, global_step: int, history: list[dict[str, Any]]) -> None:
    """checkpoint.pt (atomic) + the exported model/ directory."""
    state = {"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
             "optimizer": optimizer.state_dict(), "epoch": epoch, "global_step": global_step,
             "history": history, "fingerprint": fingerprint(teacher)}
    with atomic_path(out_dir / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)
    model.save_pretrained(out_dir / MODEL_DIR)


def load_checkpoint(checkpoint_path: Path, teacher: TeacherConfig, model: nn.Module, optimizer,
                    ema: nn.Module | None) -> tuple[int, int, list[dict[str, Any]]]:
    """Load checkpoint.pt into model, optimiser (and EMA); returns (epoch, global step, history)."""
    from gcdr.checkpoints import load_torch_file

    checkpoint = load_torch_file(checkpoint_path, map_location="cpu", weights_only=True,
                                 hint="delete it or pass --restart to train from scratch")
    changed = request_differences({"teacher": checkpoint["fingerprint"]}, {"teacher": fingerprint(teacher)})
    if changed:
        raise TeacherCheckpointError(f"{checkpoint_path} was trained with other teacher settings "
                                     f"({', '.join(changed)}); "
                                     "pass --restart to start over or --out for a new folder")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if ema is not None:
        ema.load_state_dict(checkpoint["ema"])
    return checkpoint["epoch"], checkpoint["global_step"], checkpoint["history"]


def _finished(output: StageOutput, epochs: int) -> bool:
    """True when provenance.json says this request finished ``epochs`` epochs (written after model/ was exported)."""
    return output.done() and output.provenance().get("epochs_done") == epochs


# ------------------------------------------------------------------------------------------- the loop
def train(cfg: dict[str, Any], out_dir: str | Path, restart: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the teacher of ``cfg`` into ``out_dir``; returns the last history row.

    The main process claims ``out_dir`` for the run's request (gcdr.stage_output: a second run on it is refused,
    another request is refused with one line, ``restart`` empties the folder first)."""
    cfg = RunConfig(cfg)
    out_dir = Path(out_dir)
    teacher = cfg.teacher
    accelerator = Accelerator(cpu=cpu_processes())
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if teacher.cpu_threads and device.type == "cpu":
        torch.set_num_threads(teacher.cpu_threads)
    show = progress and accelerator.is_local_main_process
    on_error = cfg.dataset.on_error

    labeled = [s for s in load_samples(cfg, "labeled") if s.has_gaze]  # only in-frame rows carry a loss
    unlabeled = load_samples(cfg, "unlabeled") if teacher.mean_teacher else []
    if not labeled:
        raise ValueError("no labeled in-frame persons in the split: nothing to train the teacher on")
    request = teacher_request(cfg, teacher, labeled, unlabeled)
    with StageOutput(out_dir, STAGE, request, config=cfg, restart=restart,
                     main_process=accelerator.is_main_process, out_option="another --out") as output:
        return _train(cfg, teacher, output, accelerator, labeled, unlabeled, on_error, restart, device, rank, world,
                      show)


def _train(cfg: RunConfig, teacher: TeacherConfig, output: StageOutput, accelerator: Accelerator, labeled: list,
           unlabeled: list, on_error: str, restart: bool, device: torch.device, rank: int, world: int,
           show: bool) -> dict[str, Any]:
    out_dir = output.folder
    direct = teacher.objective == "direct"
    train_ds = GazeDataset(labeled + unlabeled, train=True, style="vat",
                           labeled=[True] * len(labeled) + [False] * len(unlabeled), on_error=on_error,
                           seed=teacher.seed, two_views=teacher.mean_teacher,  # view2_*: the EMA teacher's
                           enlarge_head_box=enlarges_head_boxes(cfg),
                           pseudo=PseudoLabelFolder(teacher.prior) if direct else None)
    n_labeled = sum(train_ds.labeled)
    # validation samples from pure noise: a diffusion teacher's measure (the direct mapping has no such mode)
    val_ds = validation_dataset(cfg, teacher) if accelerator.is_main_process and not direct else None

    torch.manual_seed(teacher.seed)  # the initial weights: same seed, same teacher
    model = build_teacher(teacher)
    ema = make_ema_teacher(model) if teacher.mean_teacher else None
    optimizer = torch.optim.Adam(model.parameters(), lr=teacher.lr, weight_decay=teacher.weight_decay)
    two_stream = None
    if ema is not None:
        two_stream = TwoStreamBatchSampler(range(n_labeled, len(train_ds)), range(n_labeled), teacher.batch_size,
                                           teacher.labeled_batch_size, seed=teacher.seed)
    batches_per_epoch = len(epoch_batches(two_stream, len(train_ds), teacher, 0, rank, world))
    if not batches_per_epoch:
        raise ValueError(f"{len(train_ds)} persons give no batch of {teacher.batch_size} per process")
    epochs = planned_epochs(teacher, batches_per_epoch)
    start_epoch, global_step, history = 0, 0, []
    checkpoint_path = out_dir / CHECKPOINT_FILE
    if checkpoint_path.is_file() and not restart:
        start_epoch, global_step, history = load_checkpoint(checkpoint_path, teacher, model, optimizer, ema)
        log.info("resuming %s at epoch %d (step %d)", checkpoint_path, start_epoch, global_step)
    if start_epoch >= epochs:
        if accelerator.is_main_process and not _finished(output, start_epoch):
            # killed after the last checkpoint, before the run was marked done: model/ may lag behind it
            model.save_pretrained(out_dir / MODEL_DIR)
            output.finish(epochs_done=start_epoch, last=history[-1] if history else {},
                          model_dir=str(out_dir / MODEL_DIR))
            log.info("%s: model/ exported again from the epoch-%d checkpoint", out_dir, start_epoch)
        log.info("%s: already trained for %d epochs (%d planned); nothing to do", out_dir, start_epoch, epochs)
        return history[-1] if history else {}

    counts = model.parameter_counts()
    details = dict(labeled_persons=n_labeled, unlabeled_persons=len(unlabeled), processes=world,
                   parameters=counts, model_config=dataclasses.asdict(model.config),
                   validation_persons=len(val_ds) if val_ds is not None else 0)
    output.start(**details)
    if accelerator.is_main_process:
        budget = (f"teacher.train_steps={teacher.train_steps} (teacher.epochs unused)" if teacher.train_steps
                  else "teacher.epochs")
        log.info("teacher %s: %s parameters; %d labeled%s persons; %d epochs from %d (budget: %s) -> %s",
                 teacher.encoder, f"{counts['total']:,}", n_labeled,
                 f" + {len(unlabeled)} unlabeled (mean teacher)" if ema is not None else "", epochs,
                 start_epoch, budget, out_dir)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if ema is not None:
        ema.to(device)
    train_scheduler = make_train_scheduler(unwrapped.config)
    ddim = make_ddim_scheduler(unwrapped.config)
    writer = None
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=global_step)

    for epoch in range(start_epoch, epochs):
        torch.manual_seed(epoch_seed(teacher.seed, epoch, rank))
        train_ds.set_epoch(epoch)
        batches = epoch_batches(two_stream, len(train_ds), teacher, epoch, rank, world)
        if teacher.train_steps is not None:
            batches = batches[: teacher.train_steps - global_step]
        loader = DataLoader(train_ds, batch_sampler=batches, num_workers=teacher.num_workers,
                            collate_fn=gaze_collate)
        model.train()
        weight = consistency_weight(epoch, teacher.consistency_weight, teacher.consistency_rampup_epochs)
        mean_teacher = None if ema is None else MeanTeacherStep(ema, ddim, teacher.teacher_steps, teacher.eta,
                                                                teacher.consistency, weight)
        sums = {"loss": 0.0, "supervised_loss": 0.0, "consistency_loss": 0.0}
        decay = float("nan")
        start = time.perf_counter()
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not show):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, supervised, consistency = training_step(model, optimizer, batch, train_scheduler,
                                                          unwrapped.config.scale, mean_teacher,
                                                          backward=accelerator.backward, direct=direct)
            if ema is not None:
                decay = update_ema(ema, unwrapped, global_step, teacher.ema_decay, teacher.ema_ramp_every)
            global_step += 1
            sums["loss"] += loss.item()
            sums["supervised_loss"] += supervised.item()
            sums["consistency_loss"] += consistency.item()
            if writer is not None:
                writer.add_scalar("train/loss", loss.item(), global_step)
        means = accelerator.reduce(torch.tensor([v / len(batches) for v in sums.values()], device=device), "mean")
        row = {"epoch": epoch + 1, "step": global_step, **dict(zip(sums, means.tolist())),
               "consistency_weight": weight if ema is not None else 0.0, "ema_decay": decay,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - start, 2)}
        last_epoch = epoch + 1 == epochs
        if accelerator.is_main_process and val_ds is not None and (
                last_epoch or (teacher.val_every > 0 and (epoch + 1) % teacher.val_every == 0)):
            row.update(validate(unwrapped, val_ds, teacher, device, progress=show))
        history.append(row)
        if accelerator.is_main_process:
            save_checkpoint(out_dir, unwrapped, ema, optimizer, teacher, epoch + 1, global_step, history)
            write_csv_atomic(out_dir / HISTORY_FILE, history)
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, float) and math.isfinite(value):
                    writer.add_scalar(f"epoch/{key}", value, epoch + 1)
            writer.flush()
            log.info("epoch %d/%d: %s", epoch + 1, epochs,
                     ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                               if k != "epoch"))
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        writer.close()
    output.finish(epochs_done=epochs, last=history[-1], model_dir=str(out_dir / MODEL_DIR), **details)
    accelerator.wait_for_everyone()
    return history[-1]
