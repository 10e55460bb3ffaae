"""The spatio-temporal VAT student (gcdr/students/vat_video.py) and its clips (gcdr/data/clips.py): VAT's
``ModelSpatioTemporal`` keys and size, official files, truncated back-propagation over chunks, and
``pipelines.train_student`` on a VideoAttentionTarget-format fixture made of the vat-demo frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gcdr.data.clips import ClipChunkSampler
from gcdr.students.config import StudentConfig
from gcdr.students.export import load_student
from gcdr.students.registry import student_from_config
from gcdr.students.vat import VATSpatial
from gcdr.students.vat_video import VATSpatioTemporal, VATVideoStudent

REPO = Path(__file__).resolve().parents[1]
VAT_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"
TINY = dict(model="vat-video", backbone="resnet18", vat_width=4, vat_input_size=64)


def tiny_student(**overrides) -> VATVideoStudent:
    torch.manual_seed(0)
    return student_from_config(StudentConfig(**{**TINY, **overrides}))


def clip_batch(slots: list[int], starts: list[bool], size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    rows = len(slots)
    head = torch.zeros(rows, 1, size, size)
    head[:, :, 8:24, 16:32] = 1
    return {"scene": torch.randn(rows, 3, size, size, generator=generator), "head_channel": head,
            "face": torch.randn(rows, 3, size, size, generator=generator),
            "clip_slot": torch.tensor(slots), "clip_start": torch.tensor(starts)}


# ------------------------------------------------------------------------------------------ the network

def test_official_size_has_vat_keys_and_parameter_count():
    with torch.device("meta"):
        temporal, spatial = VATSpatioTemporal("resnet50"), VATSpatial("resnet50")
    state = temporal.state_dict()
    assert len(state) == 959
    assert sum(p.numel() for p in temporal.parameters()) == 99_277_242
    extra = [k for k in state if ".bn_ds." in k or k.startswith("convlstm_scene.")]
    assert [k for k in state if k not in extra] == list(spatial.state_dict())  # the spatial keys, in VAT's order
    assert len(extra) == 2 * 18 * 5 + 8  # bn_ds in each of the 18 blocks of both pathways, 2 LSTM layers
    for layer in (0, 1):
        assert state[f"convlstm_scene.weight_ih_l{layer}"].shape == (2048, 512, 3, 3)
        assert state[f"convlstm_scene.weight_hh_l{layer}"].shape == (2048, 512, 3, 3)
        assert state[f"convlstm_scene.bias_ih_l{layer}"].shape == (2048,)
    assert state["layer1_scene.0.bn_ds.weight"].shape == (256,)
    assert state["layer5_face.1.bn_ds.running_var"].shape == (1024,)
    keys = list(state)
    assert keys.index("fc_inout.bias") < keys.index("convlstm_scene.weight_ih_l0") < keys.index("deconv1.weight")


def test_an_official_layout_file_loads_strictly(tmp_path):
    """``model_videoatttarget.pt`` as VAT writes it: ``{'model': state}`` with ModelSpatioTemporal's names and
    shapes (built here from the names and shapes, filled with numbers)."""
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in VATSpatioTemporal("resnet50").state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.randint(0, 5, shape, generator=generator) if dtype == torch.int64 else
                 torch.rand(shape, generator=generator) * 0.01).to(dtype) for k, (shape, dtype) in shapes.items()}
    torch.save({"model": state}, tmp_path / "model_videoatttarget.pt")
    student, checkpoint = load_student(tmp_path / "model_videoatttarget.pt")  # recognised among the students
    assert isinstance(student, VATVideoStudent) and checkpoint["official"] == "vat-video"
    result = student.model.load_state_dict(state, strict=True)  # every key, every shape, or it raises
    assert not result.missing_keys and not result.unexpected_keys
    loaded = student.trainable_state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_spatial_weights_load_as_the_start(tmp_path):
    """VATSpatial / model_gazefollow.pt: every spatial key loads; only bn_ds and the ConvLSTM are left."""
    torch.manual_seed(1)
    spatial = VATSpatial("resnet18", width=4, input_size=64)
    torch.save({"model": spatial.state_dict()}, tmp_path / "model_gazefollow.pt")
    student = tiny_student()
    report = student.load_init_weights(tmp_path / "model_gazefollow.pt")
    assert not report.unexpected and len(report.loaded) == len(spatial.state_dict())
    assert report.missing and all(".bn_ds." in k or k.startswith("convlstm_scene.") for k in report.missing)
    assert torch.equal(student.model.conv4.weight, spatial.conv4.weight)


# --------------------------------------------------------------------------------------------- clips

def test_chunks_carry_the_state_as_one_pass_does():
    """Two chunks of 3 frames (state carried between calls) = one call on 6 frames; a new clip starts at zero."""
    student = tiny_student().eval()
    whole = clip_batch([0, 1] * 6, [True, True] + [False] * 10)  # 2 clips x 6 frames, time-major
    with torch.no_grad():
        heatmap_whole, inout_whole = student(whole)
        parts = []
        for rows in (slice(0, 6), slice(6, 12)):
            parts.append(student({k: v[rows] for k, v in whole.items()}))
        again = student({k: v[0:6] for k, v in whole.items()})  # clip starts again: state reset
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), heatmap_whole)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), inout_whole)
    torch.testing.assert_close(again[0], heatmap_whole[0:6])
    assert not torch.allclose(heatmap_whole[0], heatmap_whole[2])  # frames differ, so does the recurrence


def test_a_training_chunk_trains_only_the_decoder_with_frozen_batchnorm():
    from gcdr.students.recipe import student_loss

    student = tiny_student(inout_loss_weight=100.0)
    cfg = StudentConfig(**TINY, inout_loss_weight=100.0)
    student.train()
    assert student.training and not any(m.training for m in student.modules() if isinstance(m, nn.BatchNorm2d))
    groups = student.parameter_groups(cfg)
    assert [g["lr"] for g in groups] == [cfg.lr, 5 * cfg.lr]
    optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    batch = clip_batch([0, 1, 0, 1, 0], [True, True, False, False, False])
    batch.update(target_heatmap_64=torch.rand(5, 64, 64), has_target=torch.tensor([1, 1, 0, 1, 1]).bool(),
                 prior_heatmap_64=torch.zeros(5, 64, 64), prior_valid=torch.zeros(5, dtype=torch.bool),
                 is_labeled=torch.ones(5, dtype=torch.bool), inout=torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    for _ in range(2):  # the second chunk continues the clips from a detached state
        loss, logs = student_loss(student, batch, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        batch["clip_start"] = torch.zeros(5, dtype=torch.bool)
    assert torch.isfinite(loss) and "inout_loss" in logs
    after = student.model.state_dict()
    changed = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"convlstm_scene", "deconv1", "deconv2", "deconv3", "conv4", "fc_inout"}


def test_clip_chunk_sampler_walks_clips_in_chunks():
    tracks = [[10, 11, 12, 13, 14], [20, 21]]
    chunks = list(ClipChunkSampler(tracks, clips_per_batch=2, chunk_length=2))
    frames = [[(frame, slot, start) for frame, _, slot, start in chunk] for chunk in chunks]
    assert frames == [[(10, 0, True), (20, 1, True), (11, 0, False), (21, 1, False)],
                      [(12, 0, False), (13, 0, False)], [(14, 0, False)]]
    windows = ClipChunkSampler([list(range(100))], 1, 3, clip_length=50, shuffle=True, seed=3)
    rows = [row for chunk in windows for row in chunk]
    assert len(rows) == 50 and len(windows) == 17 and [r[0] for r in rows] == list(range(rows[0][0], rows[0][0] + 50))


# ------------------------------------------------------------------------------------------ the stage

def write_fixture(root: Path) -> None:
    """VideoAttentionTarget layout over the 10 vat-demo frames (1920x1080): one show, one clip, two tracks
    per split; hand-written gaze, some frames out of frame (-1, -1)."""
    show, clip = "Demo Show", "2575_2584"
    frames = sorted((VAT_DEMO / "frames").glob("*.jpg"))
    image_dir = root / "images" / show / clip
    image_dir.mkdir(parents=True)
    for frame in frames:
        (image_dir / frame.name).symlink_to(frame)
    gaze = {"s00": [(960, 700)] * 4 + [(-1, -1)] * 2 + [(1000, 720)] * 4,   # person 1 looks down-right
            "s01": [(700, 600)] * 3 + [(-1, -1)] * 3 + [(650, 640)] * 4}    # person 2 looks left
    for person, boxes in (("s00", "person1.txt"), ("s01", "person2.txt")):
        rows = (VAT_DEMO / boxes).read_text().split()
        for split in ("train", "test"):
            track = root / "annotations" / split / show / clip / f"{person}.txt"
            track.parent.mkdir(parents=True, exist_ok=True)
            track.write_text("".join(f"{row},{x},{y}\n" for row, (x, y) in zip(rows, gaze[person])))


@pytest.mark.skipif(not (VAT_DEMO / "person1.txt").is_file(), reason="needs ../shared/data/vat-demo beside the repository")
def test_train_student_trains_and_evaluates_vat_video_on_clips(tmp_path):
    from gcdr.config import load_config
    from gcdr.students.evaluation import evaluate_checkpoint

    write_fixture(tmp_path / "vat")
    overrides = [f"dataset.root={tmp_path / 'vat'}", "dataset.labeled_shows=null", "split.ratio=1.0",
                 f"out_root={tmp_path / 'out'}", "student.model=vat-video", "student.backbone=resnet18",
                 "student.vat_width=4", "student.vat_input_size=64", "student.init_weights=null",
                 "student.epochs=2", "student.batch_size=2", "student.clip_length=6", "student.chunk_length=3",
                 "student.num_workers=0", "student.cpu_threads=1"]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pipelines.train_student", "--config", "configs/videoattentiontarget.yaml",
               "--out", str(out), *[arg for o in overrides for arg in ("--set", o)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["final"]
    assert metrics["student"] == "vat-video" and final["epoch"] == 2
    for key in ("auc", "avg_l2", "ap"):
        assert np.isfinite(final[key]), (key, final)
    assert 0 <= final["auc"] <= 1 and 0 <= final["ap"] <= 1
    # 2 tracks of 6-frame windows in chunks of 3: 2 optimiser steps per epoch
    assert metrics["steps"] == 4 and metrics["training_set"]["labeled"] == 20

    # make eval on the saved model: the same clips, the same numbers
    cfg = load_config(str(REPO / "configs" / "videoattentiontarget.yaml"), overrides)
    result = evaluate_checkpoint(cfg, out / "model", device="cpu")
    assert result["metrics"]["n"] == 15 and result["metrics"]["n_ap"] == 20  # in-frame frames: 8 + 7
    for key in ("auc", "avg_l2", "ap"):
        assert result["metrics"][key] == pytest.approx(final[key], abs=1e-6)


def test_inout_lr_gives_the_inout_parameters_their_own_group():
    """Gaze-LLE's VideoAttentionTarget recipe: parameters named *inout* at ``inout_lr`` (any student)."""
    cfg = StudentConfig(model="vat", backbone="resnet18", vat_width=4, vat_input_size=64, inout_lr=0.01)
    student = student_from_config(cfg)
    plain = student.parameter_groups(StudentConfig(model="vat"))
    assert [id(p) for p in plain] == [id(p) for p in student.parameters()]  # the default: unchanged
    rest, inout = student.parameter_groups(cfg)
    assert inout["lr"] == 0.01 and "lr" not in rest
    names = {id(p): n for n, p in student.named_parameters()}
    assert {names[id(p)].split(".")[1] for p in inout["params"]} == {
        "compress_conv1_inout", "compress_bn1_inout", "compress_conv2_inout", "compress_bn2_inout", "fc_inout"}
    assert len(rest["params"]) + len(inout["params"]) == len(plain)
    with pytest.raises(ValueError, match="inout_lr"):
        StudentConfig(inout_lr=0.0)
