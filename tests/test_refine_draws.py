"""K refined draws per person and a per-person confidence (refine.keep_draws; student.pseudo_draws,
pseudo_confidence, pseudo_keep): what refine stores, how the folder checks it, how students read it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_refine import (  # noqa: F401 (synth_cfg, teacher_and_context: fixtures shared with test_refine)
    IDS,
    priors,
    refine_run,
    synth_cfg,
    teacher_and_context,
    with_refine,
)
from torch.utils.data import default_collate

from gcdr.config import ConfigError, RunConfig, load_config
from gcdr.data.dataset import GazeDataset, pseudo_draw_index
from gcdr.heatmaps import argmax_spread, gaussian_heatmap_64
from gcdr.pseudolabels import (
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelFolderError,
    PseudoLabelFolders,
    PseudoLabelWriter,
    finalize,
)
from gcdr.stage_output import request_differences
from gcdr.students.config import StudentConfig
from gcdr.students.feature_cache import CachedFeatureDataset, FeatureCache
from gcdr.students.recipe import (
    PseudoOptionsError,
    TrainingSet,
    apply_confidence,
    average_ranks,
    batch_targets,
    check_pseudo_options,
    spread_confidence,
)
from gcdr.students.train import train_student
from gcdr.teacher.config import RefineConfig
from gcdr.teacher.diffusion import make_ddim_scheduler, noise_for_samples, refine_heatmaps

K = 3


def test_refine_heatmaps_returns_the_draws_whose_mean_it_normalises(request):
    model, context = request.getfixturevalue("teacher_and_context")
    scheduler = make_ddim_scheduler(model.config)
    noises = noise_for_samples(IDS, 0, K, 2)
    refined, mean_x0 = refine_heatmaps(model, scheduler, context, priors(), 250, 2, noises)
    again, mean_again, draws = refine_heatmaps(model, scheduler, context, priors(), 250, 2, noises, return_draws=True)
    assert torch.equal(again, refined) and torch.equal(mean_again, mean_x0)
    assert draws.shape == (K, 4, 64, 64) and torch.equal(draws.mean(0), mean_x0)
    assert not torch.allclose(draws[0], draws[1], atol=1e-3)  # independent noise per draw
    _, _, at_zero = refine_heatmaps(model, scheduler, context, priors(), 0, 2, noises, return_draws=True)
    assert at_zero.shape == (K, 4, 64, 64)  # T = 0: every draw is the input


# ------------------------------------------------------------------------------------------ the folder
@pytest.fixture(scope="module")
def refined(request):
    """The same refinement (K = 3 draws) without and with keep_draws."""
    cfg, root, unlabeled = request.getfixturevalue("synth_cfg")
    plain, kept = root / "draws_plain", root / "draws_kept"
    refine_run(with_refine(cfg, samples=K), root / "gradcam", plain)
    refine_run(with_refine(cfg, samples=K, keep_draws=True), root / "gradcam", kept)
    return cfg, root, unlabeled, plain, kept


def test_keep_draws_stores_every_draw_and_the_same_mean_map(refined):
    cfg, root, unlabeled, plain, kept = refined
    without, folder = PseudoLabelFolder(plain), PseudoLabelFolder(kept)
    ids = [s.sample_id for s in unlabeled]
    valid = [i for i in ids if folder.is_valid(i)]
    invalid = [i for i in ids if not folder.is_valid(i)]
    assert len(valid) == len(ids) - 2 and len(invalid) == 2
    for sample_id in ids:  # the mean map does not depend on keeping the draws, to the bit
        assert np.array_equal(folder.heatmap_64(sample_id), without.heatmap_64(sample_id))

    for array in sorted((kept / "parts").glob("*.draws_64.npy")):
        draws = np.load(array)
        rows = len(np.load(str(array).replace(".draws_64.", ".heatmap_64.")))
        assert draws.dtype == np.float16 and draws.shape == (rows, K, 64, 64)
        index = json.loads(array.with_name(array.name.replace(".draws_64.npy", ".index.json")).read_text())
        assert index["files"][array.name]["bytes"] == array.stat().st_size
    assert folder.has_draws and folder.has_draw_spread
    for sample_id in valid:
        draws = folder.draws_64(sample_id)
        assert draws.shape == (K, 64, 64)
        assert np.allclose(draws.reshape(K, -1).min(1), 0) and np.allclose(draws.reshape(K, -1).max(1), 1, atol=1e-3)
        spread = folder.draw_spread(sample_id)
        assert np.isfinite(spread) and spread == argmax_spread(draws, folder.heatmap_64(sample_id))
    assert any(folder.draw_spread(i) > 0 for i in valid)  # the draws do not all peak where the mean does
    assert any(not np.array_equal(folder.draws_64(i)[0], folder.draws_64(i)[1]) for i in valid)
    for sample_id in invalid:
        assert not folder.draws_64(sample_id).any() and np.isnan(folder.draw_spread(sample_id))

    # the manifest gains draw_spread only with keep_draws; a request recorded before keep_draws matches false
    assert "draw_spread" in (kept / "manifest.csv").read_text().splitlines()[0]
    assert "draw_spread" not in (plain / "manifest.csv").read_text().splitlines()[0]
    assert json.loads((kept / "request.json").read_text())["request"]["keep_draws"] is True
    plain_request = json.loads((plain / "request.json").read_text())["request"]
    older = {k: v for k, v in plain_request.items() if k != "keep_draws"}
    assert plain_request["keep_draws"] is False and request_differences(older, plain_request) == []
    assert request_differences(older, json.loads((kept / "request.json").read_text())["request"])
    assert not list((plain / "parts").glob("*.draws_64.npy"))

    # a folder without draws (older, keep_draws false, other methods) reads: None / NaN
    assert not without.has_draws and not without.has_draw_spread
    assert without.draws_64(valid[0]) is None and np.isnan(without.draw_spread(valid[0]))
    both = PseudoLabelFolders([without, folder])  # the first folder holding a person answers
    assert both.draws_64(valid[0]) is None and np.isnan(both.draw_spread(valid[0]))
    assert np.array_equal(PseudoLabelFolders([folder]).draws_64(valid[0]), folder.draws_64(valid[0]))
    assert PseudoLabelFolders([folder]).draw_spread(valid[0]) == folder.draw_spread(valid[0])

    # done: a rerun of either request rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in kept.rglob("*") if p.is_file() and p.name != ".lock"}
    refine_run(with_refine(cfg, samples=K, keep_draws=True), root / "gradcam", kept)
    assert {p: p.stat().st_mtime_ns for p in kept.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_keep_draws_needs_two_samples_in_one_line():
    with pytest.raises(ValueError, match="refine.keep_draws=true .* refine.samples") as error:
        RefineConfig(keep_draws=True, samples=1)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="refine.samples >= 2") as error:
        load_config(None, ["refine.keep_draws=true"])
    assert "\n" not in str(error.value)
    assert RefineConfig(keep_draws=True, samples=2).keep_draws


def test_a_tampered_or_missing_draws_file_is_refused(refined, tmp_path):
    *_, kept = refined
    copy = tmp_path / "copy"
    shutil.copytree(kept, copy)
    array = sorted((copy / "parts").glob("*.draws_64.npy"))[0]
    data = bytearray(array.read_bytes())
    data[-7] ^= 0x40  # one bit of one draw, the size unchanged
    array.write_bytes(bytes(data))
    with pytest.raises(PseudoLabelFolderError, match="does not match its sha256") as error:
        PseudoLabelFolder(copy)
    assert str(array) in str(error.value) and "\n" not in str(error.value)

    array.unlink()
    with pytest.raises(PseudoLabelFolderError, match="is missing") as error:
        PseudoLabelFolder(copy)
    assert str(array) in str(error.value)


def test_a_draws_file_not_in_the_index_or_of_the_wrong_shape_is_refused(tmp_path):
    def label(i: int, draws=None) -> PseudoLabel:
        return PseudoLabel(f"p{i}", gaussian_heatmap_64((0.1 * i + 0.1, 0.5)), draws_64=draws, draw_spread=0.1 * i)

    with PseudoLabelWriter(tmp_path / "plain") as writer:
        writer.add(label(0))
    np.save(tmp_path / "plain" / "parts" / "rank0-00000.draws_64.npy", np.zeros((1, 2, 64, 64), np.float16))
    with pytest.raises(PseudoLabelFolderError, match="is not recorded in rank0-00000.index.json"):
        PseudoLabelFolder(tmp_path / "plain")

    with pytest.raises(ValueError, match="draws of shape"):  # a writer without draws takes none
        PseudoLabelWriter(tmp_path / "no_draws").add(label(1, np.zeros((2, 64, 64))))
    with pytest.raises(ValueError, match="draws of shape"):
        PseudoLabelWriter(tmp_path / "k3", draws=3).add(label(1, np.zeros((2, 64, 64))))


# --------------------------------------------------------------------------------------------- students
def write_spread_folder(folder, spreads: dict[str, float]) -> PseudoLabelFolder:
    """A folder with 2 draws per person and chosen draw_spread values (the maps do not matter here)."""
    with PseudoLabelWriter(folder, draws=2) as writer:
        for i, (sample_id, spread) in enumerate(spreads.items()):
            heatmap = gaussian_heatmap_64((0.05 + 0.1 * i, 0.5))
            writer.add(PseudoLabel(sample_id, heatmap, draws_64=np.stack([heatmap, heatmap[:, ::-1]]),
                                   draw_spread=spread))
    finalize(folder)
    return PseudoLabelFolder(folder)


def training_set_of(spreads: dict[str, float]) -> TrainingSet:
    from gcdr.data.sample import PersonSample

    def person(sample_id):
        return PersonSample(sample_id, f"/nowhere/{sample_id}.jpg", (1, 1, 5, 5), np.array([[0.5, 0.5]], np.float32))

    return TrainingSet([person("lab0"), *map(person, spreads)], [True] + [False] * len(spreads),
                       {"labeled": 1, "pseudo": len(spreads)})


SPREADS = {"u0": 0.30, "u1": 0.05, "u2": 0.20, "u3": 0.05, "u4": 0.10, "u5": 0.40}


def test_filter_keeps_the_lowest_spread_ties_by_sample_id(tmp_path):
    folder = write_spread_folder(tmp_path / "f", SPREADS)
    kept = apply_confidence(training_set_of(SPREADS), folder, StudentConfig(pseudo_confidence="filter"))
    assert [s.sample_id for s in kept.samples] == ["lab0", "u1", "u3", "u4"]  # 0.5 x 6 = 3, in training-set order
    assert kept.labeled == [True, False, False, False]
    assert kept.counts == {"labeled": 1, "pseudo": 3, "pseudo_low_confidence": 3}
    one = apply_confidence(training_set_of(SPREADS), folder, StudentConfig(pseudo_confidence="filter",
                                                                           pseudo_keep=0.2))
    assert [s.sample_id for s in one.samples] == ["lab0", "u1"]  # a tie at 0.05: u1 before u3
    everyone = apply_confidence(training_set_of(SPREADS), folder, StudentConfig(pseudo_confidence="filter",
                                                                                pseudo_keep=1.0))
    assert len(everyone.samples) == 7 and everyone.counts["pseudo_low_confidence"] == 0


def test_weight_has_mean_one_and_orders_by_spread(tmp_path):
    assert spread_confidence([0.3, 0.1, 0.2]).tolist() == [0.0, 1.0, 0.5]
    assert spread_confidence([0.1, 0.1, 0.4]).tolist() == [0.75, 0.75, 0.0]  # ties share their mean rank
    assert average_ranks([2.0, 1.0, 2.0, 0.5]).tolist() == [2.5, 1.0, 2.5, 0.0]  # spread_check's Spearman too
    folder = write_spread_folder(tmp_path / "w", SPREADS)
    weighted = apply_confidence(training_set_of(SPREADS), folder, StudentConfig(pseudo_confidence="weight"))
    assert [s.sample_id for s in weighted.samples] == ["lab0", *SPREADS]  # nobody dropped
    weights = weighted.pseudo_weights
    assert set(weights) == set(SPREADS) and np.mean(list(weights.values())) == pytest.approx(1.0)
    by_spread = sorted(SPREADS, key=SPREADS.get)
    assert all(weights[a] >= weights[b] for a, b in zip(by_spread, by_spread[1:]))
    assert weights["u1"] == weights["u3"] > weights["u4"] > weights["u2"] > weights["u0"] > weights["u5"] == 0

    # the weight reaches the loss as pseudo_weight x w, through the dataset's prior_weight
    batch = {"is_labeled": torch.tensor([True, False, False]), "has_target": torch.tensor([True, False, False]),
             "target_heatmap_64": torch.rand(3, 64, 64), "prior_heatmap_64": torch.rand(3, 64, 64),
             "prior_valid": torch.tensor([False, True, True]), "inout": torch.tensor([1.0, 1.0, 1.0]),
             "prior_weight": torch.tensor([1.0, weights["u1"], weights["u0"]])}
    targets = batch_targets(batch, StudentConfig(pseudo_weight=0.5, pseudo_confidence="weight"))
    assert targets["weight"].tolist() == pytest.approx([1.0, 0.5 * weights["u1"], 0.5 * weights["u0"]])


def test_options_without_draws_are_refused_in_one_line_naming_the_folder(refined):
    *_, plain, kept = refined
    without, folder = PseudoLabelFolder(plain), PseudoLabelFolder(kept)
    for options, what in (({"pseudo_draws": "per_pass"}, "holds no refined draws"),
                          ({"pseudo_confidence": "weight"}, "has no draw_spread values"),
                          ({"pseudo_confidence": "filter"}, "has no draw_spread values")):
        with pytest.raises(PseudoOptionsError, match=what) as error:
            check_pseudo_options(StudentConfig(**options), without)
        message = str(error.value)
        assert "\n" not in message and message.startswith(str(plain)) and "refine.keep_draws=true" in message
        check_pseudo_options(StudentConfig(**options), folder)  # a folder with draws serves them
        with pytest.raises(PseudoOptionsError, match="PSEUDO=<folder>"):
            check_pseudo_options(StudentConfig(**options), None)
    check_pseudo_options(StudentConfig(), without)  # the defaults need nothing
    check_pseudo_options(StudentConfig(), None)
    with pytest.raises(ValueError, match="student.pseudo_keep must be in"):
        StudentConfig(pseudo_keep=0.0)
    assert StudentConfig(pseudo_confidence=None).pseudo_confidence == "none"  # --set ...=none parses as null


def per_pass_dataset(unlabeled, folder, **kwargs) -> GazeDataset:
    return GazeDataset(unlabeled, train=False, labeled=False, pseudo=folder, pseudo_draws="per_pass", seed=5,
                       **kwargs)


def test_per_pass_picks_one_draw_per_epoch_deterministically(refined):
    *_, unlabeled, _, kept = refined
    folder = PseudoLabelFolder(kept)
    dataset = per_pass_dataset(unlabeled, folder)
    valid = [i for i, s in enumerate(unlabeled) if folder.is_valid(s.sample_id)]
    priors_by_epoch = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        items = {i: dataset[i] for i in valid}
        for i, item in items.items():
            draw = pseudo_draw_index(5, epoch, i, K)
            stored = folder.draws_64(unlabeled[i].sample_id)[draw]
            assert torch.equal(item["prior_heatmap_64"], torch.from_numpy(stored))
        priors_by_epoch.append({i: item["prior_heatmap_64"] for i, item in items.items()})
    for i in valid:  # every person trains on another draw in the next epoch
        assert pseudo_draw_index(5, 0, i, K) != pseudo_draw_index(5, 1, i, K)
        assert not torch.equal(priors_by_epoch[0][i], priors_by_epoch[1][i])
    assert sorted(pseudo_draw_index(5, e, valid[0], K) for e in range(K)) == list(range(K))  # each once per K
    assert len({pseudo_draw_index(5, 0, i, K) for i in valid}) > 1  # persons out of step
    # numpy's SeedSequence: the same choice on any machine (recorded values)
    assert [pseudo_draw_index(0, 0, i, 4) for i in range(8)] == [3, 2, 3, 2, 1, 2, 1, 3]
    assert [pseudo_draw_index(1, 2, i, 4) for i in range(8)] == [3, 0, 0, 3, 0, 1, 0, 1]

    again = per_pass_dataset(unlabeled, folder)  # same seed: the same choice
    again.set_epoch(1)
    assert all(torch.equal(again[i]["prior_heatmap_64"], priors_by_epoch[1][i]) for i in valid)
    mean = GazeDataset(unlabeled, train=False, labeled=False, pseudo=folder, seed=5)
    mean.set_epoch(1)
    mean_map = folder.heatmap_64(unlabeled[valid[0]].sample_id)
    assert torch.equal(mean[valid[0]]["prior_heatmap_64"], torch.from_numpy(mean_map))
    assert "prior_weight" not in mean[valid[0]]  # items gain the key only with prior_weights
    weighted = GazeDataset(unlabeled, train=False, labeled=False, pseudo=folder,
                           prior_weights={unlabeled[valid[0]].sample_id: 0.25})
    assert weighted[valid[0]]["prior_weight"].item() == 0.25 and weighted[valid[1]]["prior_weight"].item() == 1.0


def test_per_pass_changes_the_targets_of_the_feature_cache_each_epoch(refined, tmp_path):
    *_, unlabeled, _, kept = refined
    folder = PseudoLabelFolder(kept)
    valid = [i for i, s in enumerate(unlabeled) if folder.is_valid(s.sample_id)]
    persons = [unlabeled[i] for i in valid]
    base = per_pass_dataset(persons, folder, style="gazelle", scene_size=32,
                            prior_weights={persons[0].sample_id: 2.0})
    cache = FeatureCache(tmp_path / "cache", "avgpool-8", 32)
    cached = CachedFeatureDataset.build(base, torch.nn.AvgPool2d(8), cache, train=True, seed=5, progress=False)
    epochs = []
    for epoch in (0, 1):
        cached.set_epoch(epoch)
        batch = default_collate([cached[i] for i in range(len(persons))])
        expected = torch.stack([torch.from_numpy(base.prior_64(i, epoch)[0]) for i in range(len(persons))])
        assert torch.equal(batch["prior_heatmap_64"], expected)
        assert batch["prior_weight"].tolist() == [2.0] + [1.0] * (len(persons) - 1)
        epochs.append(batch["prior_heatmap_64"])
    assert all(not torch.equal(a, b) for a, b in zip(*epochs))


def tiny_student_cfg(cfg, **student) -> RunConfig:
    tiny = dict(model="vat", vat_width=4, vat_input_size=64, epochs=1, steps_per_epoch=1, batch_size=4,
                labeled_per_batch=2, num_workers=0, cpu_threads=1)
    return RunConfig(dict(cfg, student=dict(cfg["student"], **tiny, **student)))


def test_train_student_with_per_pass_and_filter_records_the_persons_used(refined):
    cfg, root, unlabeled, plain, kept = refined
    n_valid = len(unlabeled) - 2
    out = root / "students" / "filtered"
    result = train_student(tiny_student_cfg(cfg, pseudo_draws="per_pass", pseudo_confidence="filter",
                                            pseudo_keep=0.5), str(kept), out_dir=out)
    assert result["training_set"]["pseudo"] == n_valid // 2
    assert result["training_set"]["pseudo_low_confidence"] == n_valid - n_valid // 2
    assert json.loads((out / "metrics.json").read_text())["training_set"] == result["training_set"]
    student_request = json.loads((out / "request.json").read_text())["request"]["student"]
    assert student_request["pseudo_draws"] == "per_pass" and student_request["pseudo_confidence"] == "filter"
    assert student_request["pseudo_keep"] == 0.5

    default = train_student(tiny_student_cfg(cfg), str(plain), out_dir=root / "students" / "default")
    assert default["training_set"]["pseudo"] == n_valid and "pseudo_low_confidence" not in default["training_set"]
    request = json.loads((root / "students" / "default" / "request.json").read_text())["request"]
    later = {"pseudo_draws", "pseudo_confidence", "pseudo_keep"}
    older = {**request, "student": {k: v for k, v in request["student"].items() if k not in later}}
    assert request_differences(older, request) == []  # students written before these settings still match
    changed = {**request, "student": {**request["student"], "pseudo_keep": 0.25}}
    assert request_differences(older, changed) == ["student.pseudo_keep: (absent) -> 0.25"]

    refused = root / "students" / "refused"
    with pytest.raises(PseudoOptionsError) as error:
        train_student(tiny_student_cfg(cfg, pseudo_draws="per_pass"), str(plain), out_dir=refused)
    assert str(error.value).startswith(str(plain)) and "\n" not in str(error.value)
    assert not refused.exists()  # refused before the folder is claimed


def test_spread_check_scores_the_low_and_high_spread_halves_and_refuses_a_folder_without_draws(refined):
    from gcdr_tools.spread_check import spread_check

    cfg, root, unlabeled, plain, kept = refined
    result = spread_check(cfg, str(kept))
    folder = PseudoLabelFolder(kept)
    scored = [s for s in unlabeled if s.inout == 1 and folder.is_valid(s.sample_id)]
    assert result["persons"] == len(scored) > 0
    low, high = result["low_spread_avg_l2"], result["high_spread_avg_l2"]
    assert min(low, high) - 1e-9 <= result["avg_l2"] <= max(low, high) + 1e-9
    assert -1.0 <= result["spearman"] <= 1.0
    with pytest.raises(SystemExit, match="keep_draws"):
        spread_check(cfg, str(plain))
