"""VAT-GC (GCDR's ``baseline_gradcam`` teacher): VAT with the person's Grad-CAM map as an attention input
(gcdr.students.vat.VATGCStudent), its datasets, training with PSEUDO=none and self-training through refine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gcdr.config import RunConfig, load_config
from gcdr.data import load_samples
from gcdr.data.splits import make_split
from gcdr.errors import UserError
from gcdr.heatmaps import normalize_heatmap
from gcdr.provenance import write_provenance
from gcdr.pseudolabels import PseudoLabel, PseudoLabelFolder, PseudoLabelFolders, PseudoLabelWriter, finalize
from gcdr.students.config import StudentConfig
from gcdr.students.recipe import student_loss
from gcdr.students.registry import student_from_config
from gcdr.students.student import Student
from gcdr.students.vat import GRADCAM_INPUTS, VATGCStudent, VATSpatial
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

TINY = dict(vat_width=4, vat_input_size=64)
TINY_SET = ["student.model=vat-gc", "student.vat_width=4", "student.vat_input_size=64"]


def tiny(seed: int = 0, **changes) -> VATGCStudent:
    torch.manual_seed(seed)
    return student_from_config(StudentConfig(model="vat-gc", **TINY, **changes))


def batch(rows: int = 2, seed: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    head_channel = torch.zeros(rows, 1, 64, 64)
    head_channel[:, :, 8:20, 16:32] = 1
    return {"scene": torch.randn(rows, 3, 64, 64, generator=generator), "head_channel": head_channel,
            "face": torch.randn(rows, 3, 64, 64, generator=generator),
            "prior_heatmap_64": torch.rand(rows, 64, 64, generator=generator),
            "prior_valid": torch.ones(rows, dtype=torch.bool),
            "is_labeled": torch.ones(rows, dtype=torch.bool), "has_target": torch.ones(rows, dtype=torch.bool),
            "target_heatmap_64": torch.rand(rows, 64, 64, generator=generator),
            "inout": torch.ones(rows)}


def rows(values: dict[str, torch.Tensor], index: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in values.items()}


# ------------------------------------------------------------------------------------------------- model

def test_the_attention_layer_reads_head_gradcam_and_face():
    student = tiny()
    model = student.model
    assert GRADCAM_INPUTS == 256 and model.extra_attention_inputs == 256
    assert model.attn.in_features == 8 * 8 + 256 + model.pathway_channels  # head side ceil(64 / 8) = 8
    official = VATSpatial("resnet50", gradcam_input=True)
    assert (official.attn.in_features, official.attn.out_features) == (784 + 256 + 1024, 49)
    vector = model.gradcam_vector(torch.zeros(2, 64, 64))
    assert vector.shape == (2, 256)


def test_the_output_depends_on_the_gradcam_map():
    student = tiny().eval()
    values = batch()
    values["prior_heatmap_64"][1] = values["prior_heatmap_64"][0]
    values["scene"][1], values["face"][1] = values["scene"][0], values["face"][0]
    with torch.no_grad():
        same, _ = student(values)
        torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)  # same inputs, same output
        values["prior_heatmap_64"][1] = torch.roll(values["prior_heatmap_64"][0], 20, dims=1)
        other, _ = student(values)
    assert not torch.allclose(other[0], other[1])  # another Grad-CAM map, another heatmap
    with pytest.raises(ValueError, match="needs the Grad-CAM map"):
        student.model(values["scene"], values["head_channel"], values["face"])


def test_a_row_without_a_valid_gradcam_carries_no_loss():
    student = tiny().eval()  # BN on running statistics: rows do not depend on each other
    cfg = StudentConfig(model="vat-gc", **TINY)
    values = batch(rows=3)
    values["prior_valid"][1] = False
    loss, logs = student_loss(student, values, cfg)
    assert torch.isfinite(loss) and logs["rows"] == 2  # the student's loss_rows drop row 1 from the mask
    expected, _ = student_loss(student, rows(values, [0, 2]), cfg)
    torch.testing.assert_close(loss, expected)
    changed = dict(values, target_heatmap_64=values["target_heatmap_64"].clone())
    changed["target_heatmap_64"][1] = 100.0  # the invalid row's target changes nothing
    torch.testing.assert_close(student_loss(student, changed, cfg)[0], loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    student.zero_grad()
    values["prior_valid"][:] = False  # no row counts: 0, still in the graph
    empty, _ = student_loss(student, values, cfg)
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    with torch.no_grad():  # evaluation (return_logits False) still predicts every row
        assert torch.isfinite(student(values)[0]).all()


def test_vat_is_unchanged_when_the_option_is_off():
    """VATStudent's network is the VATSpatial of before the option (same seed: same state, same outputs)."""
    torch.manual_seed(0)
    old = VATSpatial("resnet18", width=4, input_size=64).eval()
    torch.manual_seed(0)
    vat = student_from_config(StudentConfig(model="vat", **TINY)).eval()
    assert vat.model.extra_attention_inputs == 0 and old.attn.in_features == 8 * 8 + old.pathway_channels
    state, old_state = vat.model.state_dict(), old.state_dict()
    assert list(state) == list(old_state)
    for key in old_state:
        assert torch.equal(state[key], old_state[key]), key
    values = batch()
    with torch.no_grad():
        heatmap, inout = vat(values)
        old_heatmap, old_inout = old(values["scene"], values["head_channel"], values["face"])
    assert torch.equal(heatmap, old_heatmap) and torch.equal(inout, old_inout)
    assert "gradcam" not in json.dumps(vat.model_config())
    with pytest.raises(ValueError, match="takes none"):
        old(values["scene"], values["head_channel"], values["face"], values["prior_heatmap_64"])


def test_save_pretrained_round_trip(tmp_path):
    student = tiny(seed=3).eval()
    directory = student.save_pretrained(tmp_path / "model")
    assert json.loads((directory / "config.json").read_text())["model"] == "vat-gc"
    loaded = Student.from_pretrained(directory)
    assert type(loaded) is VATGCStudent and loaded.model.attn.in_features == student.model.attn.in_features
    values = batch()
    with torch.no_grad():
        for a, b in zip(student(values), loaded(values)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not VATGCStudent.reads_official(student.model.state_dict())


def test_input_maps_look_up_several_folders(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, ids, valid in ((first, ["x", "y"], True), (second, ["y", "z"], False)):
        with PseudoLabelWriter(folder) as writer:
            for sample_id in ids:
                writer.add(PseudoLabel(sample_id, np.full((64, 64), 0.5 if valid else 0.0), valid=valid,
                                       invalid_reason="" if valid else "all_zero"))
        finalize(folder)
    maps = PseudoLabelFolders([PseudoLabelFolder(first), PseudoLabelFolder(second)])
    assert "x" in maps and "z" in maps and "w" not in maps and len(maps) == 3
    assert maps.is_valid("y") and not maps.is_valid("z")  # the first folder holding it answers
    assert float(maps.heatmap_64("x").max()) == 0.5
    with pytest.raises(KeyError, match="'w'"):
        maps.heatmap_64("w")
    assert Student.input_maps(StudentConfig()) is None  # other students read none
    with pytest.raises(UserError, match="gradcam_folders"):
        VATGCStudent.input_maps(StudentConfig(model="vat-gc"))
    with pytest.raises(ValueError, match="gradcam_folders must be a list"):
        StudentConfig(model="vat-gc", gradcam_folders="a")


# --------------------------------------------------------------------------------------------- pipeline

def write_gradcam(folder, samples, split: str, seed: int) -> None:
    """Grad-CAM-like maps for ``samples`` (the second one invalid), finalised as pipelines.gradcam leaves them."""
    rng = np.random.default_rng(seed)
    write_provenance(folder, "gradcam", {}, status="running", split=split)
    with PseudoLabelWriter(folder, chunk_size=5) as writer:
        for i, sample in enumerate(samples):
            raw = rng.random((6, 8)).astype(np.float32)
            heatmap = normalize_heatmap(np.kron(raw, np.ones((11, 8)))[:64, :64])
            writer.add(PseudoLabel(sample.sample_id, heatmap if i != 1 else np.zeros((64, 64)), valid=i != 1,
                                   invalid_reason="all_zero" if i == 1 else "", raw_map=raw, answer="cup",
                                   key_noun="cup", image_path=sample.image_path,
                                   head_box_xyxy_px=sample.head_box_xyxy_px))
    summary = finalize(folder, expected_ids=[s.sample_id for s in samples])
    write_provenance(folder, "gradcam", {}, status="done", split=split, summary=summary)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("vatgc")
    data = root / "data"
    generate_synthgaze(data, SynthConfig(train_persons=24, test_persons=4, test_annotators=3, image_size=(96, 128)),
                       progress=False)
    make_split(data / "train_annotations_release_persondet.txt", 0.5, 0, data / "splits" / "seed0")
    base = [f"dataset.root={data}", f"split.dir={data / 'splits'}", "split.ratio=0.5", f"out_root={root / 'out'}",
            "student.batch_size=4", "student.labeled_per_batch=null", "student.steps_per_epoch=2", "student.cpu_threads=1", "refine.batch_size=3"]
    cfg = load_config("configs/synthgaze.yaml", base)
    for seed, split in enumerate(("labeled", "unlabeled", "test")):
        write_gradcam(root / f"gradcam-{split}", load_samples(cfg, split), split, seed)
    return {"root": root, "base": base}


def test_vat_gc_trains_evaluates_and_teaches(synth, capsys):
    from gcdr.students.evaluation import dataset_for_student, predict_dataset
    from gcdr.students.train import train_student
    from gcdr.teacher.refine import refine_split
    from pipelines.train_student import main

    root = synth["root"]
    folders = f"student.gradcam_folders=[{root / 'gradcam-labeled'},{root / 'gradcam-test'}]"
    out = root / "vat-gc"
    args = ["--pseudo", "none", "--out", str(out), "--epochs", "1"]
    for item in synth["base"] + TINY_SET + [folders]:
        args += ["--set", item]
    main(args)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"] == "vat-gc" and metrics["final"]["epoch"] == 1 and np.isfinite(metrics["final"]["auc"])
    request = json.loads((out / "request.json").read_text())["request"]
    assert request["student"]["gradcam_folders"] == [str(root / "gradcam-labeled"), str(root / "gradcam-test")]

    cfg = load_config("configs/synthgaze.yaml", synth["base"] + TINY_SET + [folders])
    with pytest.raises(UserError, match="PSEUDO=none") as error:
        train_student(cfg, str(root / "gradcam-unlabeled"), out_dir=root / "refused")
    assert "\n" not in str(error.value) and not (root / "refused").exists()
    no_folders = load_config("configs/synthgaze.yaml", synth["base"] + TINY_SET)
    with pytest.raises(UserError, match="gradcam_folders"):
        train_student(no_folders, None, out_dir=root / "refused")
    assert not (root / "refused").exists()
    assert len(request["input_maps_fingerprints"]) == 2

    from gcdr.students.evaluation import evaluate_checkpoint

    evaluated = evaluate_checkpoint(cfg, out / "model", batch_size=4)["metrics"]  # make eval: the test Grad-CAM
    assert np.isclose(evaluated["auc"], metrics["final"]["auc"], atol=1e-6)
    assert np.isclose(evaluated["avg_l2"], metrics["final"]["avg_l2"], atol=1e-5)

    # the teacher: its predictions of every unlabeled person, from their Grad-CAM (refine's source folder)
    refine_cfg = RunConfig(dict(no_folders, refine=dict(no_folders["refine"], method="student",
                                                        student=str(out / "model"))))
    summary = refine_split(refine_cfg, src=root / "gradcam-unlabeled", out=root / "self", progress=False)
    unlabeled = load_samples(cfg, "unlabeled")
    written = PseudoLabelFolder(root / "self")
    assert summary["persons"] == len(unlabeled) and all(s.sample_id in written for s in unlabeled)
    student = Student.from_pretrained(out / "model")
    maps = PseudoLabelFolders([PseudoLabelFolder(root / "gradcam-unlabeled")])
    predicted, _ = predict_dataset(student, dataset_for_student(unlabeled, student, input_maps=maps), progress=False)
    for i, sample in enumerate(unlabeled):
        if written.is_valid(sample.sample_id):
            assert np.allclose(written.heatmap_64(sample.sample_id), normalize_heatmap(predicted[i]), atol=2e-3)
    blank, _ = predict_dataset(student, dataset_for_student(unlabeled, student, input_maps=None), progress=False)
    assert not np.allclose(blank, predicted)  # the Grad-CAM reached the prediction


def test_make_predict_refuses_a_student_that_needs_grad_cam(tmp_path):
    from gcdr.students.prediction import predict_folder

    tiny().save_pretrained(tmp_path / "model")
    with pytest.raises(UserError, match="reads each person's Grad-CAM map"):
        predict_folder(tmp_path / "model", tmp_path, [str(tmp_path / "heads.txt")], tmp_path / "out")
