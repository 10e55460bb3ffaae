"""Refining Grad-CAM maps with the teacher (gcdr.teacher.diffusion) and the refine / train-teacher stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gcdr.config import RunConfig
from gcdr.heatmaps import gaussian_heatmap_64, normalize_heatmap, normalize_heatmaps
from gcdr.locking import FolderInUseError
from gcdr.provenance import write_provenance
from gcdr.pseudolabels import (
    IncompleteFolderError,
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelWriter,
    finalize,
)
from gcdr.stage_output import StageOutputError
from gcdr.teacher.diffusion import (
    make_ddim_scheduler,
    network_input,
    noise_for_samples,
    refine_heatmaps,
)
from gcdr.teacher.model import GazeDiffusionTeacher, TeacherModelConfig
from gcdr.teacher.refine import RefineSetupError, argmax_gaussian, refine_split
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

TINY = TeacherModelConfig(encoder_width=8, unet_channels=8, channel_mult=(1, 2, 2, 2), attention_head_dim=8,
                          norm_groups=4, attention_levels=(3,))
IDS = ["p0", "p1", "p2", "p3"]


@pytest.fixture(scope="module")
def teacher_and_context():
    torch.manual_seed(0)
    model = GazeDiffusionTeacher(TINY)
    with torch.no_grad():
        for parameter in model.parameters():  # give the zero-initialised layers values: every input matters
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
        model.eval()
        generator = torch.Generator().manual_seed(0)
        scene = torch.randn(4, 3, 224, 224, generator=generator)
        face = torch.randn(4, 3, 224, 224, generator=generator)
        head = torch.zeros(4, 1, 224, 224)
        for i in range(4):
            head[i, 0, 30 * i:30 * i + 40, 50:90] = 1
        context = model.encode(scene, head, face)
    return model, context


def blob(x: float, y: float) -> torch.Tensor:
    return torch.from_numpy(gaussian_heatmap_64((x, y)))


def priors() -> torch.Tensor:
    return torch.stack([blob(0.2, 0.3), blob(0.7, 0.6), blob(0.5, 0.1), blob(0.9, 0.9)]) * 0.8 + 0.1


def run_refine(teacher_and_context, prior, T, steps=2, draws=1, seed=0, ids=IDS, semantics="intended"):
    model, context = teacher_and_context
    noises = noise_for_samples(ids, seed, draws, steps)
    return refine_heatmaps(model, make_ddim_scheduler(model.config), context, prior, T, steps, noises,
                           semantics=semantics)[0]


def test_t0_returns_the_input(teacher_and_context):
    prior = priors()
    refined = run_refine(teacher_and_context, prior, T=0)
    assert torch.allclose(refined, normalize_heatmaps(prior), atol=1e-6)
    assert torch.allclose(refined, (prior - 0.1) / 0.8, atol=1e-5)


def test_maximum_t_ignores_the_input(teacher_and_context):
    first = run_refine(teacher_and_context, priors(), T=500)
    second = run_refine(teacher_and_context, torch.rand(4, 64, 64), T=500)
    assert torch.equal(first, second)
    assert torch.equal(first, run_refine(teacher_and_context, priors(), T=800))  # capped at 500


def test_intermediate_t_depends_on_input_and_is_normalised(teacher_and_context):
    prior = priors()
    refined = run_refine(teacher_and_context, prior, T=100)
    other = run_refine(teacher_and_context, torch.roll(prior, 20, dims=2), T=100)
    assert not torch.allclose(refined, other, atol=1e-4)
    assert refined.shape == (4, 64, 64)
    assert torch.allclose(refined.flatten(1).min(1).values, torch.zeros(4), atol=1e-6)
    assert torch.allclose(refined.flatten(1).max(1).values, torch.ones(4), atol=1e-6)


def test_same_seed_same_output_whatever_the_batch(teacher_and_context):
    model, context = teacher_and_context
    prior = priors()
    first = run_refine(teacher_and_context, prior, T=250, draws=2)
    assert torch.equal(first, run_refine(teacher_and_context, prior, T=250, draws=2))
    assert not torch.allclose(first, run_refine(teacher_and_context, prior, T=250, draws=2, seed=1), atol=1e-4)
    scheduler = make_ddim_scheduler(model.config)
    halves = [refine_heatmaps(model, scheduler, [c[rows] for c in context], prior[rows], 250, 2,
                              noise_for_samples([IDS[r] for r in rows], 0, 2, 2))[0] for rows in ([0, 1], [2, 3])]
    assert torch.allclose(torch.cat(halves), first, atol=1e-5)


def test_as_coded_sampler_feeds_double_mapped_inputs(teacher_and_context):
    model, context = teacher_and_context
    seen: list[torch.Tensor] = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        run_refine(teacher_and_context, priors(), T=250, semantics="as_coded")
        as_coded, seen[:] = list(seen), []
        run_refine(teacher_and_context, priors(), T=250, semantics="intended")
        intended = list(seen)
    finally:
        handle.remove()
    assert len(as_coded) == len(intended) == 2
    for inputs in as_coded:  # docs/method.md#intended-vs-as-coded-sampler: the as-coded state is mapped twice -> [0.5, 0.75]
        assert inputs.min() >= 0.5 - 1e-6 and inputs.max() <= 0.75 + 1e-6
    assert intended[0].min() < 0.3 and intended[0].max() > 0.7  # mapped once: the full [0, 1] range
    assert torch.equal(intended[0], network_input(intended[0] * 4 - 2, 2.0))


# ------------------------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def synth_cfg(tmp_path_factory):
    """A 24-person SynthGaze with a 50 % split, a final Grad-CAM-like folder (one invalid map, one unreadable
    image) and a tiny saved teacher."""
    from gcdr.config import load_config
    from gcdr.data import load_samples
    from gcdr.data.splits import make_split

    root = tmp_path_factory.mktemp("stage2")
    generate_synthgaze(root / "data", SynthConfig(train_persons=24, test_persons=4, test_annotators=3),
                       progress=False)
    overrides = [f"out_root={root / 'out'}", f"dataset.root={root / 'data'}", f"split.dir={root / 'splits'}",
                 "split.ratio=0.5", "refine.batch_size=3", "refine.previews=2"]
    cfg = load_config(None, overrides)
    make_split(root / "data" / cfg["dataset"]["train_file"], 0.5, 0, root / "splits" / "seed0")
    unlabeled = load_samples(cfg, "unlabeled")
    rng = np.random.default_rng(0)
    write_gradcam(root / "gradcam", unlabeled, rng)
    torch.manual_seed(0)
    GazeDiffusionTeacher(TINY).save_pretrained(root / "untrained_teacher")  # predicts 0 everywhere
    trained = GazeDiffusionTeacher(TINY)
    with torch.no_grad():
        for parameter in trained.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    trained.save_pretrained(root / "teacher")
    cfg["refine"]["teacher"] = str(root / "teacher")
    return cfg, root, unlabeled


def write_gradcam(folder, samples, rng, finish: bool = True, expected=None) -> None:
    """Grad-CAM-like maps for ``samples``: the second one all zero (invalid), the last one an unreadable image;
    ``finish``: finalize (with ``expected`` ids, default all) and mark the stage done, as pipelines.gradcam."""
    write_provenance(folder, "gradcam", {}, status="running", split="unlabeled")
    with PseudoLabelWriter(folder, chunk_size=5) as writer:
        for i, sample in enumerate(samples):
            if sample.sample_id in writer.done_ids:  # resumed
                continue
            raw = np.zeros((6, 8), np.float32) if i == 1 else rng.random((6, 8)).astype(np.float32)
            heatmap = normalize_heatmap(np.kron(raw, np.ones((11, 8)))[:64, :64])  # [64, 64]
            reason = "all_zero" if i == 1 else "image_error" if i == len(samples) - 1 else ""
            writer.add(PseudoLabel(sample.sample_id, heatmap if not reason else np.zeros((64, 64)), valid=not reason,
                                   invalid_reason=reason, raw_map=None if reason == "image_error" else raw,
                                   answer="cup", key_noun="cup", image_path=sample.image_path,
                                   head_box_xyxy_px=sample.head_box_xyxy_px))
    if finish:
        summary = finalize(folder, expected_ids=[s.sample_id for s in samples] if expected is None else expected)
        write_provenance(folder, "gradcam", {}, status="done", split="unlabeled", summary=summary)


def with_refine(cfg: RunConfig, **changes) -> RunConfig:
    """``cfg`` with ``refine.<key>`` changed (the tree copied, the config itself left alone)."""
    return RunConfig(dict(cfg, refine=dict(cfg["refine"], **changes)))


def written(folder) -> dict:
    """path -> (mtime, bytes) of every file of ``folder`` but the lock (which records its latest holder)."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def refine_run(cfg: RunConfig, src, out, **kwargs) -> dict:
    return refine_split(cfg, src=src, out=out, progress=False, **kwargs)


def test_refine_stage_writes_resumes_and_keeps_invalid_rows(synth_cfg):
    cfg, root, unlabeled = synth_cfg
    out = root / "refined"
    summary = refine_run(cfg, root / "gradcam", out)
    assert summary["persons"] == len(unlabeled) and summary["missing"] == 0
    assert summary["invalid_reasons"] == {"all_zero": 1, "image_error": 1}
    folder = PseudoLabelFolder(out)
    valid_ids = [s.sample_id for s in unlabeled if folder.is_valid(s.sample_id)]
    assert len(valid_ids) == len(unlabeled) - 2
    maps = np.stack([folder.heatmap_64(i) for i in valid_ids])
    assert np.allclose(maps.reshape(len(maps), -1).max(1), 1, atol=1e-3) and maps.min() >= 0
    assert folder.get(valid_ids[0]).answer == "cup"
    assert len(list((out / "previews").glob("*.png"))) == 2
    request = json.loads((out / "provenance.json").read_text())["request"]
    assert request["T"] == cfg["refine"]["T"] and request["steps"] == 2 and request["source"].endswith("gradcam")
    assert len(request["teacher_sha256"]) == 64

    files = written(out)
    assert refine_run(cfg, root / "gradcam", out) == summary  # done: nothing to do, nothing rewritten
    assert written(out) == files

    cfg_too_far = with_refine(cfg, T=10000)
    with pytest.raises(RefineSetupError, match="beyond the 500 diffusion steps"):
        refine_run(cfg_too_far, root / "gradcam", root / "too_far")
    assert not (root / "too_far").exists()  # refused before anything is written

    cfg_untrained = with_refine(cfg, teacher=str(root / "untrained_teacher"))
    summary = refine_run(cfg_untrained, root / "gradcam", root / "untrained")
    assert summary["invalid_reasons"] == {"all_zero": 1, "image_error": 1, "refined_all_zero": len(valid_ids)}

    # same seed, another batch size and a fresh folder: the same maps
    cfg_batch = with_refine(cfg, batch_size=16)
    refine_run(cfg_batch, root / "gradcam", root / "refined_b16")
    again = PseudoLabelFolder(root / "refined_b16")
    assert np.allclose(np.stack([again.heatmap_64(i) for i in valid_ids]), maps, atol=2e-3)  # float16 storage


def test_refine_baselines(synth_cfg):
    cfg, root, unlabeled = synth_cfg
    source = PseudoLabelFolder(root / "gradcam")
    for method in ("none", "argmax"):
        cfg_method = with_refine(cfg, method=None if method == "none" else method)
        summary = refine_run(cfg_method, root / "gradcam", root / method)
        assert summary["invalid_reasons"] == {"all_zero": 1, "image_error": 1}
    copied, argmax = PseudoLabelFolder(root / "none"), PseudoLabelFolder(root / "argmax")
    sample_id = unlabeled[0].sample_id
    assert np.allclose(copied.heatmap_64(sample_id), source.heatmap_64(sample_id), atol=1e-3)
    raw = source.raw_map(sample_id)  # [6, 8]: argmax cell (row, col) -> x = col / 8, y = row / 6
    row, col = divmod(int(np.argmax(raw)), raw.shape[1])
    assert np.allclose(argmax.heatmap_64(sample_id), gaussian_heatmap_64((col / 8, row / 6)), atol=1e-3)
    grid = np.zeros((4, 5), np.float32)
    grid[1, 3] = 1.0  # x = 3 / 5 = 0.6 -> cell 38; y = 1 / 4 -> cell 16 (a half-cell offset would give 44, 24)
    assert np.unravel_index(np.argmax(argmax_gaussian(grid)), (64, 64)) == (16, 38)


TINY_TEACHER = {"encoder_width": 8, "unet_channels": 8, "channel_mult": [1, 2, 2, 2], "attention_head_dim": 8,
                "norm_groups": 4, "attention_levels": [3], "batch_size": 4, "epochs": 1, "val_max_persons": 2,
                "val_steps": 2, "lr": 1e-3}


def test_train_teacher_stage_trains_checkpoints_and_resumes(synth_cfg):
    from pipelines import train_teacher

    cfg, root, _ = synth_cfg
    tiny = TINY_TEACHER
    cfg = dict(cfg, teacher=tiny)
    out = root / "teacher_run"
    first = train_teacher.train(cfg, out, progress=False)
    assert first["epoch"] == 1 and np.isfinite(first["loss"]) and 0 <= first["val_auc"] <= 1
    assert (out / "model" / "model.safetensors").is_file() and (out / "checkpoint.pt").is_file()
    assert json.loads((out / "provenance.json").read_text())["status"] == "done"
    second = train_teacher.train(dict(cfg, teacher=dict(tiny, epochs=2)), out, progress=False)
    assert second["epoch"] == 2 and second["step"] == 2 * first["step"]
    assert (out / "log.csv").read_text().count("\n") == 3  # header + 2 epochs
    with pytest.raises(StageOutputError, match="--restart"):  # another lr: another request
        train_teacher.train(dict(cfg, teacher=dict(tiny, epochs=3, lr=5e-4)), out, progress=False)
    model = GazeDiffusionTeacher.from_pretrained(out / "model")
    assert model.config.unet_channels == 8

    mean_teacher = dict(tiny, mean_teacher=True, labeled_batch_size=2, teacher_steps=2, val_split="none")
    row = train_teacher.train(dict(cfg, teacher=mean_teacher), root / "teacher_mt", progress=False)
    assert row["ema_decay"] == 0.0 and row["consistency_weight"] == pytest.approx(4000 * np.exp(-5))
    assert np.isfinite(row["consistency_loss"]) and row["consistency_loss"] >= 0


def test_teacher_step_budget_is_the_same_run_cut_exactly_and_resumes(synth_cfg):
    from pipelines import train_teacher

    cfg, root, _ = synth_cfg
    teacher = dict(TINY_TEACHER, val_split="none")
    by_epochs = train_teacher.train(dict(cfg, teacher=dict(teacher, epochs=2)), root / "t_epochs", progress=False)
    per_epoch = by_epochs["step"] // 2
    assert per_epoch >= 2  # so that a cut epoch is a real cut
    by_steps = train_teacher.train(dict(cfg, teacher=dict(teacher, train_steps=2 * per_epoch)), root / "t_steps",
                                   progress=False)
    assert (by_steps["epoch"], by_steps["step"]) == (2, 2 * per_epoch)
    weights = [(root / name / "model" / "model.safetensors").read_bytes() for name in ("t_epochs", "t_steps")]
    assert weights[0] == weights[1]  # whole epochs: the budget in steps is the same run

    cut = train_teacher.train(dict(cfg, teacher=dict(teacher, train_steps=per_epoch + 1)), root / "t_cut",
                              progress=False)
    assert (cut["epoch"], cut["step"]) == (2, per_epoch + 1)  # the second epoch stops after one batch
    resumed = train_teacher.train(dict(cfg, teacher=dict(teacher, train_steps=2 * per_epoch + 1)), root / "t_cut",
                                  progress=False)  # a larger budget resumes the same folder
    assert (resumed["epoch"], resumed["step"]) == (3, 2 * per_epoch + 1)
    with pytest.raises(ValueError, match="teacher.train_steps must be >= 1"):
        train_teacher.train(dict(cfg, teacher=dict(teacher, train_steps=0)), root / "t_zero", progress=False)


# --------------------------------------------------------------------- unfinished inputs, locks, leftovers
def run_none(cfg, src, out):
    return refine_run(with_refine(cfg, method=None), src, out)


def assert_one_line_naming(error, path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_refine_refuses_a_half_done_source_until_its_stage_finishes(synth_cfg):
    cfg, root, unlabeled = synth_cfg
    src, out = root / "half_done", root / "from_half_done"
    write_gradcam(src, unlabeled[:5], np.random.default_rng(1), finish=False)  # a kill after 5 of 12 persons
    with pytest.raises(IncompleteFolderError) as error:
        run_none(cfg, src, out)
    message = assert_one_line_naming(error, src)
    assert f"incomplete ({len(unlabeled) - 5} of {len(unlabeled)} persons" in message
    assert "finish it with `make gradcam SPLIT=unlabeled` first" in message
    assert not (out / "parts").exists()  # nothing written that a later run would take as done

    write_gradcam(src, unlabeled, np.random.default_rng(1))  # the stage resumed and finished
    summary = run_none(cfg, src, out)
    assert summary["persons"] == len(unlabeled) and summary["missing"] == 0
    assert "missing" not in summary["invalid_reasons"]


def test_refine_refuses_a_source_missing_persons_of_the_split(synth_cfg):
    cfg, root, unlabeled = synth_cfg
    ids = [s.sample_id for s in unlabeled]
    counted = root / "missing_counted"  # its stage knew it lacked 2 persons (summary: missing 2)
    write_gradcam(counted, unlabeled[:-2], np.random.default_rng(2), expected=ids)
    with pytest.raises(IncompleteFolderError) as error:
        run_none(cfg, counted, root / "from_missing_counted")
    message = assert_one_line_naming(error, counted)
    assert f"incomplete (2 of {len(ids)} persons" in message and "make gradcam SPLIT=unlabeled" in message

    other = root / "made_for_others"  # finished for other persons (e.g. --limit): complete in its own eyes
    write_gradcam(other, unlabeled[:-2], np.random.default_rng(2))
    with pytest.raises(IncompleteFolderError) as error:
        run_none(cfg, other, root / "from_made_for_others")
    message = assert_one_line_naming(error, other)
    assert f"lacks 2 of {len(ids)} persons" in message and repr(ids[-2]) in message


def test_a_refined_folder_is_refused_when_its_source_changed(synth_cfg):
    cfg, root, unlabeled = synth_cfg
    src, out = root / "changing_source", root / "from_changing_source"
    write_gradcam(src, unlabeled, np.random.default_rng(3))
    run_none(cfg, src, out)
    request = json.loads((out / "provenance.json").read_text())["request"]
    assert len(request["source_fingerprint"]) == 64
    run_none(cfg, src, out)  # the same source: done, nothing to do

    import shutil

    shutil.rmtree(src)
    write_gradcam(src, unlabeled, np.random.default_rng(4))  # Grad-CAM made again: other maps
    with pytest.raises(StageOutputError, match="another request") as error:
        run_none(cfg, src, out)
    assert "source_fingerprint" in assert_one_line_naming(error, out)

    extra = PseudoLabelWriter(src, shard="late")  # a chunk added after finalize: not final any more
    extra.add(PseudoLabel("someone-else", np.zeros((64, 64)), valid=False, invalid_reason="all_zero"))
    extra.close()
    with pytest.raises(IncompleteFolderError, match="not final") as error:
        run_none(cfg, src, root / "from_changed_again")
    assert "changed after summary.json" in assert_one_line_naming(error, src)


def test_refine_removes_stale_temporaries_and_refuses_a_locked_folder(synth_cfg):
    import subprocess
    import sys

    cfg, root, _ = synth_cfg
    out = root / "locked_out"
    run_none(cfg, root / "gradcam", out)  # the folder is claimed (request.json) before a kill can leave anything
    stale = [out / ".manifest.k3x9_a2b.tmp.csv", out / "parts" / ".rank0-00000.heatmap_64.abcdefgh.tmp.npy"]
    for path in stale:
        path.write_bytes(b"left by a kill")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gcdr.locking import folder_lock\n"
         "with folder_lock(sys.argv[1], clean=False):\n    print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUseError) as error:
            run_none(cfg, root / "gradcam", out)
        message = assert_one_line_naming(error, out)
        assert f"in use by process {holder.pid}" in message and str(out / ".lock") in message
        assert all(path.exists() for path in stale)  # a running job's temporaries are left alone
    finally:
        holder.kill()
        holder.wait()
    run_none(cfg, root / "gradcam", out)  # the holder died: its lock went with it
    assert not any(path.exists() for path in stale)
    assert not list(out.rglob("*.tmp*"))


# ------------------------------------------------------------------------------------ one request per folder
def test_refine_with_another_t_is_refused_in_one_line_and_restart_replaces(synth_cfg):
    cfg, root, unlabeled = synth_cfg
    out = root / "t_changes"
    refine_run(with_refine(cfg, T=100), root / "gradcam", out)
    files = written(out)
    with pytest.raises(StageOutputError) as error:
        refine_run(cfg, root / "gradcam", out)  # the config's T
    message = assert_one_line_naming(error, out)
    T = cfg["refine"]["T"]
    assert T != 100 and f"T: 100 -> {T}" in message and "--restart" in message
    assert written(out) == files

    summary = refine_run(cfg, root / "gradcam", out, restart=True)
    assert summary["persons"] == len(unlabeled)
    request = json.loads((out / "request.json").read_text())["request"]
    assert request["T"] == T
    assert json.loads((out / "provenance.json").read_text())["request"]["T"] == T


def test_refine_refuses_a_folder_it_did_not_write(synth_cfg):
    cfg, root, _ = synth_cfg
    out = root / "foreign"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    with pytest.raises(StageOutputError, match="no refine request") as error:
        run_none(cfg, root / "gradcam", out)
    assert_one_line_naming(error, out)
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["notes.txt"]


def test_refine_before_the_teacher_names_the_command(synth_cfg, capsys):
    from gcdr.locking import run_stage
    from pipelines import refine as refine_pipeline

    cfg, root, _ = synth_cfg
    no_teacher = RunConfig(dict(cfg, refine={k: v for k, v in cfg["refine"].items() if k != "teacher"}))
    with pytest.raises(RefineSetupError) as error:
        refine_run(no_teacher, root / "gradcam", root / "no_teacher")
    message = str(error.value)
    assert "\n" not in message and "`make train-teacher RATIO=0.5 SEED=0`" in message
    assert not (root / "no_teacher").exists()

    argv = ["--no-progress", "--src", str(root / "gradcam"), "--out", str(root / "no_teacher")]
    overrides = [f"out_root={root / 'out'}", f"dataset.root={root / 'data'}", f"split.dir={root / 'splits'}",
                 "split.ratio=0.5"]  # as synth_cfg, without refine.teacher
    argv += [item for o in overrides for item in ("--set", o)]
    with pytest.raises(SystemExit) as exit_info:
        run_stage(refine_pipeline.main, argv)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "make train-teacher RATIO=0.5 SEED=0" in lines[0], lines


def test_direct_mapping_learns_from_grad_cam_and_maps_in_one_step(synth_cfg):
    """The no-diffusion baseline: the teacher's network trained on the labeled persons' Grad-CAM maps, applied
    once to each unlabeled person's map (refine.method direct)."""
    from gcdr.data import load_samples
    from gcdr.data.dataset import GazeDataset, gaze_collate
    from gcdr.teacher.diffusion import direct_inputs
    from pipelines import train_teacher

    cfg, root, unlabeled = synth_cfg
    labeled = [s for s in load_samples(cfg, "labeled") if s.has_gaze]
    write_gradcam(root / "gradcam_labeled", labeled, np.random.default_rng(1))
    tiny = {"encoder_width": 8, "unet_channels": 8, "channel_mult": [1, 2, 2, 2], "attention_head_dim": 8,
            "norm_groups": 4, "attention_levels": [3], "batch_size": 4, "epochs": 1, "lr": 1e-3,
            "objective": "direct", "prior": str(root / "gradcam_labeled"), "val_split": "none"}
    row = train_teacher.train(dict(cfg, teacher=tiny), root / "direct_teacher", progress=False)
    assert np.isfinite(row["supervised_loss"])
    direct_dir = root / "direct_teacher" / "model"
    model = GazeDiffusionTeacher.from_pretrained(direct_dir).eval()
    assert model.config.objective == "direct"

    # each method takes only a teacher trained for it
    with pytest.raises(RefineSetupError, match="needs a teacher trained with teacher.objective=diffusion"):
        refine_run(with_refine(cfg, teacher=str(direct_dir)), root / "gradcam", root / "gcdr_with_direct")
    with pytest.raises(RefineSetupError, match="needs a teacher trained with teacher.objective=direct"):
        refine_run(with_refine(cfg, method="direct"), root / "gradcam", root / "direct_with_diffusion")

    summary = refine_run(with_refine(cfg, method="direct", teacher=str(direct_dir)), root / "gradcam", root / "direct")
    assert summary["invalid_reasons"] == {"all_zero": 1, "image_error": 1}  # no Grad-CAM, no mapping
    folder, source = PseudoLabelFolder(root / "direct"), PseudoLabelFolder(root / "gradcam")
    person = unlabeled[0]
    batch = gaze_collate([GazeDataset([person], train=False, style="vat")[0]])
    with torch.no_grad():
        prior = torch.from_numpy(source.heatmap_64(person.sample_id))[None]
        x0 = model.denoise(*direct_inputs(prior, model.config.scale),
                           model.encode(batch["scene"], batch["head_channel"], batch["face"]))
        other = model.denoise(*direct_inputs(torch.flip(prior, (-1,)), model.config.scale),
                              model.encode(batch["scene"], batch["head_channel"], batch["face"]))
    assert np.allclose(folder.heatmap_64(person.sample_id), normalize_heatmaps(x0[:, 0])[0].numpy(), atol=2e-3)
    assert not torch.allclose(x0, other)  # a mapping of the Grad-CAM map, not of the image alone

    with pytest.raises(ValueError, match="teacher.objective=direct .* needs teacher.prior"):
        RunConfig(dict(cfg, teacher={"objective": "direct"})).teacher  # noqa: B018


def test_self_training_writes_the_students_own_predictions_for_every_person(synth_cfg):
    """GCDR's ``baseline`` teacher: a student trained on the labeled persons predicts the unlabeled ones,
    Grad-CAM or not (refine.method student)."""
    from gcdr.students.config import StudentConfig
    from gcdr.students.evaluation import dataset_for_student, predict_dataset
    from gcdr.students.registry import student_from_config

    cfg, root, unlabeled = synth_cfg
    torch.manual_seed(0)
    student = student_from_config(StudentConfig(model="vat", vat_width=4, vat_input_size=64,
                                                vat_zero_init_output=False), root).eval()
    student.save_pretrained(root / "student")
    summary = refine_run(with_refine(cfg, method="student", student=str(root / "student")), root / "gradcam",
                         root / "self")
    assert summary["valid"] == len(unlabeled)  # the persons whose Grad-CAM is invalid included
    folder = PseudoLabelFolder(root / "self")
    predicted, _ = predict_dataset(student, dataset_for_student(unlabeled, student), progress=False)
    for i, sample in enumerate(unlabeled):
        assert np.allclose(folder.heatmap_64(sample.sample_id), normalize_heatmap(predicted[i]), atol=2e-3)
    with pytest.raises(ValueError, match="refine.method=student .* needs refine.student"):
        with_refine(cfg, method="student").refine  # noqa: B018
