"""GCDR's two-view mean teacher (docs/method.md#mean-teacher): the two augmented views of a person, which
model sees which view, and a tiny mean-teacher training run that resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gcdr.data.dataset import VIEW2_KEYS, GazeDataset
from gcdr.data.sample import IN_FRAME, PersonSample
from gcdr.data.transforms import AugmentConfig, View, augment_vat_two_views, gaussian_heatmap_64
from gcdr.teacher.config import TeacherConfig
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

HEAD_BOX = (60.0, 40.0, 100.0, 90.0)
GAZE = (0.7, 0.6)
LABEL_KEYS = ("index", "target_heatmap_64", "has_target", "prior_heatmap_64", "prior_valid", "inout",
              "is_labeled", "gaze_points_norm", "num_gaze_points", "image_size_wh")
TINY = {"encoder_width": 8, "unet_channels": 8, "channel_mult": [1, 2, 2, 2], "attention_head_dim": 8, "train_steps": None,
        "norm_groups": 4, "attention_levels": [3], "batch_size": 4, "labeled_batch_size": 2, "epochs": 1,
        "lr": 1e-3, "mean_teacher": True, "teacher_steps": 2, "val_split": "none"}




def make_samples(tmp_path: Path, n: int) -> list[PersonSample]:
    samples = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 256, (192, 256, 3), np.uint8))
        samples.append(PersonSample(sample_id=f"img{i}.png|{i}", image_path=str(path), head_box_xyxy_px=HEAD_BOX,
                                    gaze_points_norm=np.array([GAZE], np.float32), inout=IN_FRAME,
                                    body_box_xyxy_px=(40.0, 30.0, 140.0, 190.0)))
    return samples


# ------------------------------------------------------------------------------------------- views
def test_two_views_share_crop_and_flip_but_not_jitter_and_colour():
    """transforms level: a prior that peaks at the gaze point still peaks there in both views."""
    image = np.random.default_rng(0).integers(0, 256, (192, 256, 3), np.uint8)
    gaze_px = np.array([[0.7 * 256, 0.6 * 192]])
    prior = gaussian_heatmap_64(GAZE)
    base = View(image=image, head_box_xyxy_px=HEAD_BOX, gaze_points_px=gaze_px, prior_64=prior, labeled=True)
    always = AugmentConfig(jitter_prob=1.0, crop_prob=1.0, flip_prob=1.0, colour_prob=1.0)
    for seed in range(10):
        first, second = augment_vat_two_views(base, np.random.default_rng(seed), always)
        assert first.size_wh == second.size_wh != base.size_wh  # one crop window for both
        assert np.array_equal(first.image, second.image)  # same crop and flip; colour is applied later
        assert np.array_equal(first.gaze_points_px, second.gaze_points_px)
        assert np.array_equal(first.prior_64, second.prior_64)
        gaze_cell = np.floor(first.gaze_points_px[0] / first.size_wh * 64)
        peak = np.unravel_index(np.argmax(first.prior_64), (64, 64))[::-1]
        assert np.abs(peak - gaze_cell).max() <= 2, seed  # the prior moved with the image
        assert not np.allclose(first.head_box_xyxy_px, second.head_box_xyxy_px)  # own jitter
        assert first.colour != second.colour  # own colour factors
        width = first.size_wh[0]
        for view in (first, second):  # both boxes kept by the crop, both grown from the flipped original
            assert view.head_box_xyxy_px[0] >= 0 and view.head_box_xyxy_px[2] <= width
        sizes = [v.head_box_xyxy_px[2:] - v.head_box_xyxy_px[:2] for v in (first, second)]
        assert all((s >= np.array([40.0, 50.0]) - 1e-9).all() for s in sizes)  # jitter only expands

    unlabeled = dataclasses.replace(base, labeled=False)
    for seed in range(10):  # GCDR never crops unlabeled persons
        first, second = augment_vat_two_views(unlabeled, np.random.default_rng(seed), always)
        assert first.size_wh == second.size_wh == base.size_wh


def test_dataset_views_differ_in_pixels_while_labels_agree(tmp_path):
    samples = make_samples(tmp_path, 6)
    dataset = GazeDataset(samples, train=True, labeled=[True] * 4 + [False] * 2, two_views=True, seed=3)
    plain = GazeDataset(samples, train=True, labeled=[True] * 4 + [False] * 2, seed=3)
    assert not plain.two_views and not any(k.startswith("view2_") for k in plain[0])
    differing = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            first, second = dataset.item_views(index)
            for key in LABEL_KEYS:
                assert torch.equal(first[key], second[key]), (epoch, index, key)
            differing += not torch.equal(first["scene"], second["scene"])
            item = dataset[index]
            for key in first:
                assert torch.equal(item[key], first[key]), key
            for key in VIEW2_KEYS:
                assert torch.equal(item[f"view2_{key}"], second[key]), key
            again = dataset[index]
            assert all(torch.equal(again[k], item[k]) for k in item)  # seeded: same epoch, same views
    assert differing >= 9  # each view's colour fires with p = 0.5: most items' views differ in pixels

    always = AugmentConfig(jitter_prob=1.0, crop_prob=1.0, flip_prob=1.0, colour_prob=1.0)
    forced = GazeDataset(samples, train=True, two_views=True, augment=always)
    first, second = forced.item_views(0)
    for key in ("scene", "face", "head_channel", "head_box_xyxy_norm"):
        assert not torch.equal(first[key], second[key]), key
    assert first["has_target"] and torch.equal(first["target_heatmap_64"], second["target_heatmap_64"])

    no_colour = GazeDataset(samples, train=True, two_views=True, augment=dataclasses.replace(always, colour_prob=0.0))
    first, second = no_colour.item_views(0)
    assert torch.equal(first["scene"], second["scene"])  # same crop and flip: the same scene pixels
    assert not torch.equal(first["head_channel"], second["head_channel"])  # own jitter

    test_views = GazeDataset(samples, train=False, two_views=True).item_views(0)
    assert all(torch.equal(test_views[0][k], test_views[1][k]) for k in test_views[0])
    with pytest.raises(ValueError, match="vat"):
        GazeDataset(samples, train=True, style="gazelle", two_views=True)


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def synth_cfg(tmp_path_factory):
    """A 16-person SynthGaze with a 50 % split (8 labeled, 8 unlabeled)."""
    from gcdr.config import load_config
    from gcdr.data.splits import make_split

    root = tmp_path_factory.mktemp("mean_teacher")
    generate_synthgaze(root / "data", SynthConfig(train_persons=16, test_persons=2, test_annotators=2),
                       progress=False)
    overrides = [f"out_root={root / 'out'}", f"dataset.root={root / 'data'}", f"split.dir={root / 'splits'}",
                 "split.ratio=0.5"]
    cfg = load_config(None, overrides)
    make_split(root / "data" / cfg["dataset"]["train_file"], 0.5, 0, root / "splits" / "seed0")
    return cfg, root


def test_ema_teacher_sees_view_2_and_the_student_view_1(synth_cfg, monkeypatch):
    from gcdr.teacher import training as train_teacher

    cfg, root = synth_cfg
    batches, seen = [], {"student": [], "ema": []}
    original_collate, original_make_ema = train_teacher.gaze_collate, train_teacher.make_ema_teacher

    def collate(items):
        batch = original_collate(items)
        batches.append(batch)
        return batch

    def make_ema(student):
        ema = original_make_ema(student)  # hooks after the copy: each model records only its own calls
        for name, model in (("student", student), ("ema", ema)):
            model.feat_extractor.register_forward_pre_hook(
                lambda module, args, name=name: seen[name].append([a.detach().clone() for a in args]))
        return ema

    monkeypatch.setattr(train_teacher, "gaze_collate", collate)
    monkeypatch.setattr(train_teacher, "make_ema_teacher", make_ema)
    train_teacher.train(dict(cfg, teacher=dict(TINY)), root / "hooked", progress=False)

    assert len(batches) == len(seen["student"]) == len(seen["ema"]) >= 2  # one call of each per step
    differing = 0
    for batch, student_args, ema_args in zip(batches, seen["student"], seen["ema"], strict=True):
        for got, key in zip(student_args, ("scene", "head_channel", "face"), strict=True):
            assert torch.equal(got, batch[key]), key
        for got, key in zip(ema_args, ("scene", "head_channel", "face"), strict=True):
            assert torch.equal(got, batch[f"view2_{key}"]), key
        differing += sum(not torch.equal(batch["scene"][i], batch["view2_scene"][i])
                         for i in range(len(batch["scene"])))
    assert differing > 0  # the two models really were fed different pixels


def test_mean_teacher_run_trains_and_resumes_as_one_run(synth_cfg):
    from gcdr.teacher import training as train_teacher

    cfg, root = synth_cfg
    first = train_teacher.train(dict(cfg, teacher=dict(TINY)), root / "resumed", progress=False)
    assert first["ema_decay"] == 0.0 and first["consistency_weight"] == pytest.approx(4000 * np.exp(-5))
    assert np.isfinite(first["consistency_loss"]) and first["consistency_loss"] >= 0
    second = train_teacher.train(dict(cfg, teacher=dict(TINY, epochs=2)), root / "resumed", progress=False)
    assert second["epoch"] == 2 and second["step"] == 2 * first["step"]
    whole = train_teacher.train(dict(cfg, teacher=dict(TINY, epochs=2)), root / "whole", progress=False)
    resumed = torch.load(root / "resumed" / "checkpoint.pt", weights_only=True)
    uninterrupted = torch.load(root / "whole" / "checkpoint.pt", weights_only=True)
    for part in ("model", "ema"):
        for key, value in uninterrupted[part].items():
            assert torch.allclose(resumed[part][key].float(), value.float(), atol=1e-6), (part, key)
    assert whole["loss"] == pytest.approx(second["loss"], rel=1e-5)

    # a checkpoint of the one-view mean teacher (no "mean_teacher_views") is not resumed with two views, even in a
    # folder whose request matches
    old = dict(resumed, fingerprint={k: v for k, v in resumed["fingerprint"].items() if k != "mean_teacher_views"})
    torch.save(old, root / "resumed" / "checkpoint.pt")
    with pytest.raises(ValueError, match="mean_teacher_views.*--restart"):
        train_teacher.train(dict(cfg, teacher=dict(TINY, epochs=3)), root / "resumed", progress=False)
    assert "mean_teacher_views" not in train_teacher.fingerprint(TeacherConfig())  # supervised runs: as before

    # a checkpoint from before the later teacher settings (no prior, objective, attention_heads) resumes at their
    # old values (gcdr.stage_output.LATER_DEFAULTS); another setting is named in the refusal
    later = ("prior", "objective", "attention_heads")
    older = dict(resumed, fingerprint={k: v for k, v in resumed["fingerprint"].items() if k not in later})
    torch.save(older, root / "resumed" / "checkpoint.pt")
    assert train_teacher.train(dict(cfg, teacher=dict(TINY, epochs=3)), root / "resumed", progress=False)["epoch"] == 3
    with pytest.raises(ValueError, match=r"teacher.lr: 0.001 -> 0.002\); pass --restart"):
        train_teacher.load_checkpoint(root / "resumed" / "checkpoint.pt", TeacherConfig(**dict(TINY, lr=2e-3)),
                                      None, None, None)


def test_teacher_folder_of_another_request_is_refused_in_one_line_and_restart_replaces_it(synth_cfg):
    """The teacher's output folder is claimed for its request (gcdr.stage_output): another lr is refused with one
    line naming teacher.lr, before any training; a bigger budget (epochs) resumes; --restart empties and retrains."""
    from gcdr.stage_output import StageOutputError
    from pipelines import train_teacher

    cfg, root = synth_cfg
    out = root / "claimed"
    supervised = dict(TINY, mean_teacher=False)
    train_teacher.train(dict(cfg, teacher=supervised), out, progress=False)
    request = json.loads((out / "request.json").read_text())
    assert request["stage"] == "train-teacher" and "epochs" not in request["request"]["teacher"]
    assert len(request["request"]["persons"]["labeled_split_sha256"]) == 64
    first_stamp = (out / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(StageOutputError) as refused:
        train_teacher.train(dict(cfg, teacher=dict(supervised, lr=5e-4)), out, progress=False)
    message = str(refused.value)
    assert "\n" not in message and "teacher.lr: 0.001 -> 0.0005" in message and "--restart" in message, message
    assert (out / "checkpoint.pt").stat().st_mtime_ns == first_stamp  # nothing trained, nothing written

    # the command line: one line on stderr, exit code 1; --restart replaces the folder's output
    argv = ["--config", cfg["_config_path"], "--out", str(out), "--no-progress",
            *[x for o in [f"out_root={root / 'out'}", f"dataset.root={root / 'data'}", f"split.dir={root / 'splits'}",
                          "split.ratio=0.5", *(f"teacher.{k}={json.dumps(v)}" for k, v in dict(supervised, lr=5e-4).items())]
              for x in ("--set", o)]]
    restarted = train_teacher.main([*argv, "--restart"])
    assert restarted["epoch"] == 1
    assert json.loads((out / "request.json").read_text())["request"]["teacher"]["lr"] == 5e-4
    assert json.loads((out / "provenance.json").read_text())["status"] == "done"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    stamp = (out / "checkpoint.pt").stat().st_mtime_ns
    again = train_teacher.main(argv)  # the same request, done: nothing to do
    assert again["loss"] == restarted["loss"] and (out / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_teacher_on_another_labeled_split_is_refused(synth_cfg, tmp_path):
    from gcdr.data.splits import make_split
    from gcdr.stage_output import StageOutputError
    from gcdr.teacher import training

    cfg, root = synth_cfg
    supervised = dict(TINY, mean_teacher=False)
    training.train(dict(cfg, teacher=supervised), tmp_path / "teacher", progress=False)
    other = dict(cfg, split=dict(cfg["split"], dir=str(tmp_path / "splits"), seed=3))
    make_split(root / "data" / cfg["dataset"]["train_file"], 0.5, 3, tmp_path / "splits" / "seed3")
    with pytest.raises(StageOutputError, match=r"persons\.labeled.*persons\.labeled_split_sha256"):
        training.train(dict(other, teacher=supervised), tmp_path / "teacher", progress=False)
