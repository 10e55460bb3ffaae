"""Student training: the training set, batches and targets, learning, the pipeline's checkpoints / resume,
the Gaze-LLE feature cache, evaluation and prediction on a tiny generated SynthGaze."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from gcdr.config import load_config
from gcdr.data import load_samples
from gcdr.data.dataset import GazeDataset
from gcdr.data.images import ImageReadError
from gcdr.data.sample import PersonSample
from gcdr.data.splits import make_split
from gcdr.fingerprints import scored_persons_fingerprint
from gcdr.heatmaps import gaussian_heatmap_64
from gcdr.pseudolabels import (
    IncompleteFolderError,
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelWriter,
    finalize,
)
from gcdr.stage_output import StageOutputError
from gcdr.students.evaluation import dataset_for_student, evaluate_student, predict_dataset
from gcdr.students.export import load_student, save_checkpoint
from gcdr.students.feature_cache import CachedFeatureDataset, FeatureCache
from gcdr.students.recipe import (
    EpochBatchSampler,
    StudentConfig,
    assemble_training_set,
    batch_targets,
    student_loss,
)
from gcdr.students.registry import student_from_config
from gcdr.students.train import train_student
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

VAT_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"
TINY_VAT = ["student.model=vat", "student.vat_width=4", "student.vat_input_size=64"]
TINY_GAZELLE = ["student.model=gazelle", "student.gazelle_backbone=tiny-dinov2", "student.gazelle_input_size=112",
                "student.gazelle_dim=32", "student.gazelle_layers=1", "student.gazelle_heads=2"]


def person(sample_id: str, inout: int = 1) -> PersonSample:
    return PersonSample(sample_id, f"/nowhere/{sample_id}.jpg", (1, 1, 5, 5), np.array([[0.5, 0.5]], np.float32),
                        inout=inout)


def write_pseudo(folder: Path, samples, invalid_ids=(), skip_ids=()) -> PseudoLabelFolder:
    """GT-centred pseudo-labels (shifted a little), some invalid, some left out."""
    with PseudoLabelWriter(folder) as writer:
        for sample in samples:
            if sample.sample_id in skip_ids:
                continue
            if sample.sample_id in invalid_ids:
                writer.add(PseudoLabel(sample.sample_id, np.zeros((64, 64)), valid=False, invalid_reason="all_zero"))
            else:
                point = sample.gaze_points_norm.mean(0) if len(sample.gaze_points_norm) else (0.5, 0.5)
                writer.add(PseudoLabel(sample.sample_id, gaussian_heatmap_64(np.clip(np.add(point, 0.03), 0, 1))))
    finalize(folder)
    return PseudoLabelFolder(folder)


# ---------------------------------------------------------------------------------------------- units

def test_training_set_is_labeled_plus_valid_pseudo_labeled(tmp_path):
    labeled = [person(f"lab{i}") for i in range(3)]
    unlabeled = [person(f"unl{i}", inout=0 if i == 4 else 1) for i in range(6)]
    folder = write_pseudo(tmp_path / "pseudo", unlabeled, invalid_ids={"unl1"}, skip_ids={"unl2"})
    clean = assemble_training_set(labeled, unlabeled, folder, "ignore")
    assert [s.sample_id for s in clean.samples] == ["lab0", "lab1", "lab2", "unl0", "unl3", "unl4", "unl5"]
    assert clean.labeled == [True] * 3 + [False] * 4
    assert clean.counts == {"labeled": 3, "pseudo": 4, "pseudo_invalid:all_zero": 1, "pseudo_missing": 1}
    leak = assemble_training_set(labeled, unlabeled, folder, "gt")  # GCDR as coded drops GT out-of-frame rows
    assert "unl4" not in [s.sample_id for s in leak.samples] and leak.counts["gt_out_of_frame"] == 1
    assert assemble_training_set(labeled, unlabeled, None).samples == labeled


def test_two_stream_batches_and_epoch_determinism():
    sampler = EpochBatchSampler(range(0, 5), range(5, 50), batch_size=8, labeled_per_batch=2, seed=3)
    batches = list(sampler)
    assert len(batches) == 45 // 6 and all(len(b) == 8 for b in batches)
    assert all(all(i < 5 for i, _ in b[:2]) and all(i >= 5 for i, _ in b[2:]) for b in batches)
    assert batches == list(sampler)
    sampler.set_epoch(1)
    assert batches != list(sampler)
    mixed = EpochBatchSampler(range(0, 5), range(5, 50), batch_size=8, steps=20)
    drawn = [key for b in mixed for key in b]
    assert len(drawn) == 160 and {i for i, _ in drawn} == set(range(50))  # cycles through every person
    # each pass over the persons is a new draw: the same person never repeats a (person, draw) key in an epoch
    assert len(set(drawn)) == len(drawn) and {d for _, d in drawn} == {0, 1, 2, 3}


def test_batch_targets_choose_ground_truth_or_renormalised_pseudo_label():
    gt = torch.rand(4, 64, 64)
    prior = torch.rand(4, 64, 64) * 0.5 + 0.2
    batch = {"is_labeled": torch.tensor([True, True, False, False]),
             "has_target": torch.tensor([True, False, False, False]),
             "target_heatmap_64": gt, "prior_heatmap_64": prior,
             "prior_valid": torch.tensor([False, False, True, False]),
             "inout": torch.tensor([1.0, 0.0, 0.0, 1.0])}
    targets = batch_targets(batch, StudentConfig(pseudo_weight=0.3))
    assert torch.equal(targets["target_64"][0], gt[0])
    assert targets["target_64"][2].min() == 0 and targets["target_64"][2].max() == pytest.approx(1, abs=1e-6)
    assert targets["mask"].tolist() == [True, False, True, False]
    assert targets["weight"].tolist() == pytest.approx([1, 1, 0.3, 0.3])
    assert targets["inout"].tolist() == [1, 0, -1, -1]  # unlabeled rows' GT in/out is never read
    leak = batch_targets(batch, StudentConfig(unlabeled_inout="gt"))
    assert leak["mask"].tolist() == [True, False, False, False]  # unlabeled row 2 is GT out of frame


# ---------------------------------------------------------------------------------- tiny SynthGaze

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    data = root / "data"
    generate_synthgaze(data, SynthConfig(train_persons=40, test_persons=6, test_annotators=3,
                                         image_size=(96, 128)), progress=False)
    make_split(data / "train_annotations_release_persondet.txt", 0.25, 0, data / "splits" / "seed0")
    base = [f"dataset.root={data}", f"split.dir={data / 'splits'}", "split.ratio=0.25", f"out_root={root / 'out'}",
            "student.batch_size=8", "student.labeled_per_batch=2", "student.steps_per_epoch=2", "student.cpu_threads=1"]
    cfg = load_config("configs/synthgaze.yaml", base)
    pseudo = write_pseudo(root / "pseudo", load_samples(cfg, "unlabeled"),
                          invalid_ids={s.sample_id for s in load_samples(cfg, "unlabeled")[:3]})
    return {"root": root, "base": base, "pseudo": pseudo}


def config(synth, *overrides: str) -> dict:
    return load_config("configs/synthgaze.yaml", synth["base"] + list(overrides))


@pytest.mark.parametrize("student_args", [TINY_VAT, TINY_GAZELLE], ids=["vat", "gazelle"])
def test_a_few_steps_lower_the_loss(synth, student_args):
    torch.manual_seed(0)
    cfg = config(synth, *student_args, "student.lr=0.001", "student.gazelle_lr=0.003",
                 "student.vat_zero_init_output=false")
    student = StudentConfig(**cfg["student"])
    model = student_from_config(student, synth["root"] / "out")
    samples = load_samples(cfg, "labeled")[:8]
    dataset = GazeDataset(samples, train=False, style=model.style, scene_size=model.input_size)
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    runner = model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=student.learning_rate)
    losses = []
    for _ in range(12):
        loss, _ = student_loss(runner, batch, student)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_pipeline_checkpoints_resume_and_evaluate(synth):
    from gcdr.students.evaluation import evaluate_checkpoint

    cfg = config(synth, *TINY_VAT, "student.epochs=2", "student.vat_zero_init_output=true")
    pseudo = str(synth["pseudo"].folder)
    result = train_student(cfg, pseudo)
    out = synth["root"] / "out" / "students" / f"vat-r0.25-{Path(pseudo).name}"
    for name in ("last.pt", "history.csv", "metrics.json", "provenance.json", "tb", "request.json",
                 "model/config.json", "model/model.safetensors"):
        assert (out / name).exists(), name
    n_unlabeled = len(load_samples(cfg, "unlabeled"))
    assert result["training_set"]["pseudo"] == n_unlabeled - 3 and result["training_set"]["labeled"] == 10
    assert result["final"]["epoch"] == 2 and result["steps"] == 4
    assert json.loads((out / "metrics.json").read_text())["final"]["avg_l2"] == result["final"]["avg_l2"]

    mtime = (out / "last.pt").stat().st_mtime
    assert train_student(cfg, pseudo) == result  # finished: left alone
    assert (out / "last.pt").stat().st_mtime == mtime
    resumed = train_student(config(synth, *TINY_VAT, "student.epochs=3", "student.vat_zero_init_output=true"), pseudo)
    assert resumed["final"]["epoch"] == 3 and resumed["steps"] == 6
    assert len((out / "history.csv").read_text().strip().splitlines()) == 1 + 3

    model, checkpoint = load_student(out / "last.pt")  # rebuilds itself from its model config
    save_checkpoint(synth["root"] / "copy.pt", model)
    copy, _ = load_student(synth["root"] / "copy.pt")
    directory, _ = load_student(out / "model")  # the model directory holds the last model too
    for key, value in model.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value)
        assert torch.equal(directory.state_dict()[key], value)
    for ckpt in (out / "last.pt", out / "model"):
        evaluated = evaluate_checkpoint(cfg, ckpt, device="cpu")["metrics"]
        assert evaluated["avg_l2"] == pytest.approx(resumed["final"]["avg_l2"], abs=1e-6)
        assert evaluated["auc"] == pytest.approx(resumed["final"]["auc"], abs=1e-6)


def test_a_resumed_run_equals_an_uninterrupted_one(synth):
    """Stopped after 2 of 3 epochs (max_steps) and resumed by a new Accelerator and loader: the same weights,
    to the bit, as 3 epochs in one go (the loader's own epoch counter restarts at 0 in a new run)."""
    common = (*TINY_VAT, "student.epochs=3", "student.vat_zero_init_output=true")
    pseudo = str(synth["pseudo"].folder)
    straight = synth["root"] / "straight"
    train_student(config(synth, *common), pseudo, out_dir=straight)
    interrupted = synth["root"] / "interrupted"
    first = train_student(config(synth, *common, "student.max_steps=4"), pseudo, out_dir=interrupted)
    assert first["steps"] == 4
    (interrupted / "metrics.json").unlink()  # as if killed before the end
    resumed = train_student(config(synth, *common), pseudo, out_dir=interrupted)
    assert resumed["steps"] == 6
    a = torch.load(straight / "last.pt", weights_only=False)["state_dict"]
    b = torch.load(interrupted / "last.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_feature_cache_matches_the_backbone_and_the_gazelle_pipeline_runs(synth):
    cfg = config(synth, *TINY_GAZELLE)
    student = StudentConfig(**cfg["student"])
    model = student_from_config(student, synth["root"] / "out").eval()
    samples = load_samples(cfg, "test")
    base = GazeDataset(samples, train=False, style="gazelle", scene_size=112)
    cache = FeatureCache(synth["root"] / "cache", model.config.backbone, 112)
    cached = CachedFeatureDataset.build(base, model.backbone, cache, train=False, progress=False)
    plain_batch = default_collate([base[i] for i in range(4)])
    cached_batch = default_collate([cached[i] for i in range(4)])
    with torch.no_grad():
        assert torch.allclose(cached_batch["features"], model.backbone(plain_batch["scene"]), atol=1e-2)  # float16
        with_cache = model(cached_batch)[0]
        without = model(plain_batch)[0]
    assert torch.allclose(with_cache, without, atol=1e-2)
    assert torch.equal(cached_batch["target_heatmap_64"], plain_batch["target_heatmap_64"].half().float())

    result = train_student(config(synth, *TINY_GAZELLE, "student.epochs=1", "student.feature_cache=true"), "none")
    assert result["feature_cache"] and result["training_set"] == {"labeled": 10, "pseudo": 0}
    assert np.isfinite(result["final"]["auc"])


def test_train_student_refuses_an_incomplete_pseudo_folder(synth):
    cfg = config(synth, *TINY_VAT, "student.epochs=1")
    unlabeled = load_samples(cfg, "unlabeled")
    half = synth["root"] / "pseudo_half_done"  # refine killed half-way: parts, no summary.json
    with PseudoLabelWriter(half, chunk_size=4) as writer:
        for sample in unlabeled[:8]:
            writer.add(PseudoLabel(sample.sample_id, gaussian_heatmap_64((0.5, 0.5))))
    (half / "provenance.json").write_text(json.dumps({"stage": "refine", "status": "running",
                                                      "request": {"method": "gcdr", "T": 250}}))
    with pytest.raises(IncompleteFolderError) as error:
        train_student(cfg, str(half))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{half} is incomplete ({len(unlabeled) - 8} of "
                                                      f"{len(unlabeled)} persons of split 'unlabeled' missing")
    assert message.endswith("finish it with `make refine METHOD=gcdr T=250` first")
    assert not (synth["root"] / "out" / "students" / "vat-r0.25-pseudo_half_done").exists()

    lacking = synth["root"] / "pseudo_lacking"  # finished, but for other persons
    write_pseudo(lacking, unlabeled, skip_ids={unlabeled[0].sample_id})
    with pytest.raises(IncompleteFolderError) as error:
        train_student(cfg, str(lacking))
    assert str(error.value).startswith(f"{lacking} lacks 1 of {len(unlabeled)} persons of split 'unlabeled'")


def test_a_run_made_with_another_version_of_the_pseudo_folder_is_not_resumed(synth):
    cfg = config(synth, *TINY_VAT, "student.epochs=1")
    unlabeled = load_samples(cfg, "unlabeled")
    pseudo = synth["root"] / "pseudo_versions"
    write_pseudo(pseudo, unlabeled)
    out = synth["root"] / "student_versions"
    train_student(cfg, str(pseudo), out_dir=out)
    summary = json.loads((pseudo / "summary.json").read_text())
    assert torch.load(out / "last.pt", weights_only=False)["fingerprint"]["pseudo_fingerprint"] == summary["fingerprint"]
    assert train_student(cfg, str(pseudo), out_dir=out)["final"]["epoch"] == 1  # the same folder: finished

    import shutil

    shutil.rmtree(pseudo)
    write_pseudo(pseudo, unlabeled, invalid_ids={unlabeled[0].sample_id})  # refined again: other labels
    with pytest.raises(StageOutputError) as error:
        train_student(cfg, str(pseudo), out_dir=out)
    message = str(error.value)
    assert "\n" not in message and "pseudo_fingerprint: " in message and "--restart" in message
    assert train_student(cfg, str(pseudo), out_dir=out, restart=True)["final"]["epoch"] == 1
    assert torch.load(out / "last.pt", weights_only=True)["fingerprint"]["pseudo_fingerprint"] != summary["fingerprint"]


def test_a_folder_of_another_request_is_refused_and_restart_replaces_it(synth, capsys):
    """Another setting (not a budget field) on the same folder: one line naming it; --restart starts over."""
    from pipelines.train_student import main

    out = synth["root"] / "student_requests"
    args = ["--pseudo", "none", "--out", str(out), "--epochs", "1"]
    for item in synth["base"] + TINY_VAT:
        args += ["--set", item]
    main(args)
    first = json.loads((out / "metrics.json").read_text())
    with pytest.raises(StageOutputError) as error:
        main(args + ["--set", "student.lr=0.01"])
    message = str(error.value)
    assert "\n" not in message and "student.lr: 0.001 -> 0.01" in message and str(out) in message
    assert json.loads((out / "metrics.json").read_text()) == first  # left as it was
    main(args + ["--epochs", "2"])  # a budget field: the same request, resumed
    assert json.loads((out / "metrics.json").read_text())["final"]["epoch"] == 2
    main(args + ["--set", "student.lr=0.01", "--restart"])
    assert json.loads((out / "request.json").read_text())["request"]["student"]["lr"] == 0.01
    assert json.loads((out / "metrics.json").read_text())["final"]["epoch"] == 1


def test_a_dataset_without_test_labels_is_refused_before_anything_is_written(synth, tmp_path):
    """Own frames with head boxes (no gaze labels): one line, and no output folder claimed."""
    from gcdr.students.train import NoTestLabelsError

    heads = f"[{VAT_DEMO / 'person1.txt'},{VAT_DEMO / 'person2.txt'}]"
    cfg = config(synth, *TINY_VAT, "dataset.format=headboxes", f"dataset.root={VAT_DEMO / 'frames'}",
                 "dataset.images_dir=.", f"dataset.heads={heads}")
    out = tmp_path / "student"
    with pytest.raises(NoTestLabelsError, match="'headboxes' has no test labels") as error:
        train_student(cfg, pseudo=None, out_dir=out)
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_a_finished_run_is_not_taken_as_finished_on_another_test_split(synth, tmp_path):
    """The same training persons scored on other test persons (e.g. SynthGaze drawn with more test persons):
    the finished folder is refused with one line naming test_persons, never reported with the old metrics."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(synth["base"][0].split("=", 1)[1]), data)
    cfg = config(synth, *TINY_VAT, "student.epochs=1", f"dataset.root={data}", f"split.dir={data / 'splits'}")
    out = tmp_path / "student"
    first = train_student(cfg, None, out_dir=out)
    assert train_student(cfg, None, out_dir=out) == first  # the same test persons: finished, left alone
    recorded = json.loads((out / "request.json").read_text())["request"]["test_persons"]
    assert recorded == scored_persons_fingerprint(load_samples(cfg, "test"))
    test_file = data / "test_annotations_release_persondet.txt"
    rows = test_file.read_text().splitlines(keepends=True)
    test_file.write_text("".join(rows[:-3]))  # the last test person (3 annotator rows) is gone
    with pytest.raises(StageOutputError) as error:
        train_student(cfg, None, out_dir=out)
    message = str(error.value)
    assert "\n" not in message and "test_persons: " in message and "--restart" in message
    train_student(cfg, None, out_dir=out, restart=True)
    now = json.loads((out / "request.json").read_text())["request"]["test_persons"]
    assert now == scored_persons_fingerprint(load_samples(cfg, "test")) != recorded


class OneProcess:
    """The part of an Accelerator that evaluate_student uses, for one process."""

    is_local_main_process = False

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def gather_for_metrics(self, tensors):
        return tensors


def test_evaluation_scores_only_persons_whose_image_was_read(synth, tmp_path, monkeypatch):
    """A test set with an empty and an undecodable image: on_error=skip leaves both persons out, counts them
    (n_skipped 2) and gives the metrics of the readable persons; on_error=raise names the file."""
    import cv2

    import gcdr.students.evaluation as evaluate_stage

    rng = np.random.default_rng(0)
    samples = []
    for i in range(6):
        path = tmp_path / f"test{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (72 + 8 * i, 96, 3), np.uint8))
        samples.append(PersonSample(f"test{i}.png|0", str(path), (10.0, 8.0, 30.0, 28.0),
                                    np.array([[0.2 + 0.1 * i, 0.6], [0.25 + 0.1 * i, 0.55]], np.float32), inout=1,
                                    source=f"test.txt:{i + 1}"))
    (tmp_path / "test1.png").write_bytes(b"")  # a zero-byte image
    (tmp_path / "test3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # cannot be decoded
    readable = [samples[i] for i in (0, 2, 4, 5)]

    cfg = config(synth, *TINY_VAT)
    student = StudentConfig(**cfg["student"])
    torch.manual_seed(0)
    model = student_from_config(student, synth["root"] / "out").eval()
    save_checkpoint(tmp_path / "student.pt", model)

    def metrics_of(persons, on_error):
        monkeypatch.setattr(evaluate_stage, "load_samples", lambda cfg, split: list(persons))
        run_cfg = config(synth, *TINY_VAT, f"dataset.on_error={on_error}")
        return evaluate_stage.evaluate_checkpoint(run_cfg, tmp_path / "student.pt", device="cpu")["metrics"]

    skipped, only_readable = metrics_of(samples, "skip"), metrics_of(readable, "raise")
    assert (skipped["n"], skipped["n_skipped"], skipped["n_unreadable"], skipped["n_total"]) == (4, 2, 2, 6)
    assert (only_readable["n"], only_readable["n_skipped"]) == (4, 0)
    for key in ("auc", "min_l2", "avg_l2"):
        assert skipped[key] == pytest.approx(only_readable[key], abs=1e-12), key
    with pytest.raises(ImageReadError, match="empty") as error:
        metrics_of(samples, "raise")
    assert str(tmp_path / "test1.png") in str(error.value)

    # the training loop's evaluation, on a skip-mode dataset that replaces the unreadable items
    def student_metrics(persons):
        dataset = dataset_for_student(persons, model, "skip")
        loader = torch.utils.data.DataLoader(dataset, batch_size=4)
        return evaluate_student(model, loader, dataset, OneProcess(), student.protocol, "gazefollow")

    replaced, clean = student_metrics(samples), student_metrics(readable)
    assert (replaced["n"], replaced["n_skipped"], clean["n"], clean["n_skipped"]) == (4, 2, 4, 0)
    for key in ("auc", "min_l2", "avg_l2"):
        assert replaced[key] == pytest.approx(clean[key], abs=1e-6), key


@pytest.mark.skipif(not VAT_DEMO.is_dir(), reason="needs ../shared/data/vat-demo")
def test_predict_draws_every_person_and_grouped_prediction_equals_per_person(synth, tmp_path):
    from gcdr.students.prediction import predict_folder

    cfg = config(synth, *TINY_GAZELLE)
    student = StudentConfig(**cfg["student"])
    torch.manual_seed(0)
    model = student_from_config(student, synth["root"] / "out").eval()
    save_checkpoint(tmp_path / "gazelle.pt", model)
    heads = [str(VAT_DEMO / "person1.txt"), str(VAT_DEMO / "person2.txt")]
    table = predict_folder(tmp_path / "gazelle.pt", VAT_DEMO / "frames", heads, tmp_path / "pred", device="cpu")
    assert len(table) == 20 and set(table["person"]) == {"person1", "person2"}
    assert len(list((tmp_path / "pred").glob("*.png"))) == 10
    assert table["x_norm"].between(0, 1).all()

    from gcdr.data.headboxes import read_headbox_folder

    dataset = dataset_for_student(read_headbox_folder(VAT_DEMO / "frames", heads)[:4], model)
    grouped, _ = predict_dataset(model, dataset, batch_size=4, progress=False)  # one backbone pass per image
    with torch.no_grad():
        single = model(default_collate([dataset[i] for i in range(4)]))[0].numpy()
    assert np.allclose(grouped, single, atol=1e-5)
    assert np.abs(grouped[0] - grouped[1]).max() > 1e-4  # two persons of one frame
