"""`make synth-vqa`: the SynthGaze VQA model is trained, saved atomically, loadable, and not retrained needlessly."""

import json

import numpy as np
import pytest
import torch

from gcdr.data.sample import PersonSample
from gcdr.stage_output import StageOutputError
from gcdr.vqa.blip import VqaConfig, load_vqa
from gcdr_tools.synth_vqa import SynthVqaConfig, answer_of, vocabulary, words_of


def test_answers_come_from_the_meta_column():
    person = PersonSample(sample_id="a", image_path="x.jpg", head_box_xyxy_px=(0, 0, 1, 1), meta="synth:target=cup")
    assert answer_of(person) == "cup"
    out_of_frame = PersonSample(sample_id="b", image_path="x.jpg", head_box_xyxy_px=(0, 0, 1, 1),
                                meta="synth:target=none")
    assert answer_of(out_of_frame) is None  # skipped in training: nothing to point at
    assert answer_of(PersonSample(sample_id="c", image_path="x.jpg", head_box_xyxy_px=(0, 0, 1, 1))) is None


def test_vocabulary_covers_questions_and_objects():
    words = vocabulary(VqaConfig())
    assert {"what", "green", "bounding", "?", "cup", "bottle", "nothing"} <= set(words)
    assert words_of("What is it looking at?") == ["what", "is", "it", "looking", "at", "?"]


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="source"):
        SynthVqaConfig(source="unlabeled")
    with pytest.raises(ValueError, match="multiple"):
        SynthVqaConfig(image_size=100, patch_size=16)


def test_synth_vqa_pipeline_trains_saves_and_skips(tmp_path):
    from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze
    from pipelines import synth_vqa as synth_vqa_pipeline

    data = tmp_path / "data"
    generate_synthgaze(data, SynthConfig(train_persons=6, test_persons=4, image_size=(96, 128)), progress=False)
    model_dir = tmp_path / "model"
    overrides = [f"dataset.root={data}", f"out_root={tmp_path / 'out'}", f"vqa.model={model_dir}",
                 "vqa.device=cpu", "synth.image_size=[96,128]", "synth_vqa.persons=24", "synth_vqa.epochs=1",
                 "synth_vqa.batch_size=8", "synth_vqa.image_size=48", "synth_vqa.hidden_size=32",
                 "synth_vqa.vision_layers=1", "synth_vqa.heads=2"]
    args = ["--no-progress"] + [item for o in overrides for item in ("--set", o)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = synth_vqa_pipeline.main(args)
        assert 0 < metrics["train_persons"] <= 24  # out-of-frame persons of the independent draw are skipped
        assert metrics["test_persons"] == 4 and 0.0 <= metrics["test_accuracy"] <= 1.0
        assert metrics["grid_hw"] == [6, 6]
        saved = json.loads((model_dir / "metrics.json").read_text())
        assert saved["test_accuracy"] == metrics["test_accuracy"]
        assert json.loads((model_dir / "provenance.json").read_text())["stage"] == "synth_vqa"
        assert not list(tmp_path.glob(".model*"))  # no temporary directory left behind

        vqa = load_vqa(str(model_dir), device="cpu")  # the path stage 1 takes
        assert vqa.patch_grid_hw == (6, 6)
        assert vqa.tokenizer.convert_ids_to_tokens(vqa.model.config.text_config.bos_token_id) == "[DEC]"
        stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
        again = synth_vqa_pipeline.main(args)  # same settings: not retrained
        assert again["test_accuracy"] == metrics["test_accuracy"]
        assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
        assert np.isfinite(again["final_loss"])
        assert json.loads((model_dir / "request.json").read_text())["stage"] == "synth_vqa"

        # another request: refused in one line naming what differs, not retrained
        with pytest.raises(StageOutputError) as refused:
            synth_vqa_pipeline.main([*args, "--set", "synth_vqa.lr=0.002"])
        message = str(refused.value)
        assert "\n" not in message and "synth_vqa.lr: 0.001 -> 0.002" in message and "--restart" in message, message
        assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
        # another split.ratio does not touch the independent draw's model; the path it is written to is no setting
        assert synth_vqa_pipeline.main([*args, "--set", "split.ratio=0.5"])["test_accuracy"] == metrics["test_accuracy"]
        assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
        retrained = synth_vqa_pipeline.main([*args, "--set", "synth_vqa.lr=0.002", "--restart"])
        assert (model_dir / "model.safetensors").stat().st_mtime_ns != stamp
        assert json.loads((model_dir / "provenance.json").read_text())["status"] == "done"
        assert json.loads((model_dir / "request.json").read_text())["request"]["synth_vqa"]["lr"] == 0.002
        assert retrained["test_persons"] == 4
    finally:
        torch.set_num_threads(threads)


def test_sincos_position_embeddings_are_local():
    from gcdr_tools.synth_vqa import sincos_position_embeddings

    table = sincos_position_embeddings((6, 6), 32)  # [1 + 36, 32], row 0 = image [CLS]
    assert table.shape == (37, 32) and torch.all(table[0] == 0)
    patches = table[1:]
    similarity = patches @ patches[14]  # patch (row 2, col 2)
    assert int(similarity.argmax()) == 14
    assert similarity[15] > similarity[17] and similarity[20] > similarity[32]  # nearer patches are more alike
    with pytest.raises(ValueError, match="position_init"):
        SynthVqaConfig(position_init="learned")


def test_head_attention_supervision_needs_an_earlier_layer_and_adds_loss():
    from gcdr.vqa.blip import as_vqa, build_blip_from_scratch
    from gcdr_tools.vqa_training import vqa_loss

    question = VqaConfig().question
    model, processor = build_blip_from_scratch(vocabulary(VqaConfig()), image_size=32, patch_size=8, hidden_size=32,
                                               vision_layers=1, text_layers=2, heads=2)
    vqa = as_vqa(model, processor, "cpu")
    pixels, points = torch.randn(2, 3, 32, 32), torch.tensor([[0.2, 0.3], [0.8, 0.6]])
    base = vqa_loss(vqa, pixels, [question] * 2, ["cup", "ball"], 0.0, points, 1.0, -1)
    with_head = vqa_loss(vqa, pixels, [question] * 2, ["cup", "ball"], 0.0, points, 1.0, -1, 1.0, points, 1.0)
    assert with_head > base + 1.0  # one more cross-entropy over 16 patches (>= its target's entropy, ~1.5 nats)
    with pytest.raises(ValueError, match="text layers"):
        vqa_loss(vqa, pixels, [question] * 2, ["cup", "ball"], 0.0, points, 1.0, -2, 1.0, points, 1.0)


def test_the_honest_stand_in_never_reads_a_gaze_point(tmp_path):
    """supervision=grounding: the training examples are a function of images, boxes and answers only. Replacing
    every person's gaze points by garbage changes nothing; attention targets are object box centres (grounding
    questions) or nothing (gaze questions)."""
    import dataclasses

    from gcdr.data.gazefollow import read_gazefollow
    from gcdr.vqa.blip import build_blip_from_scratch
    from gcdr_tools.synth_vqa import GROUNDING_QUESTION, build_examples
    from gcdr_tools.synthgaze import TRAIN_PERSONDET_FILE, SynthConfig, generate_synthgaze, read_objects

    data = tmp_path / "draw"
    generate_synthgaze(data, SynthConfig(version=2, train_persons=12, test_persons=0, write_objects=True),
                       progress=False)
    samples = read_gazefollow(data / TRAIN_PERSONDET_FILE, data)
    objects = {str((data / p).resolve()): drawn for p, drawn in read_objects(data, "train").items()}
    _, processor = build_blip_from_scratch(vocabulary(VqaConfig()), image_size=32, patch_size=8, hidden_size=32,
                                           vision_layers=1, text_layers=2, heads=2)
    honest, kept = build_examples(samples, processor, VqaConfig(), False, "grounding", objects, 2, seed=0)
    rng = np.random.default_rng(0)
    garbage = [dataclasses.replace(s, gaze_points_norm=rng.random((1, 2))) for s in samples]
    again, _ = build_examples(garbage, processor, VqaConfig(), False, "grounding", objects, 2, seed=0)
    assert torch.equal(honest.pixel_values, again.pixel_values) and honest.answers == again.answers
    assert torch.equal(honest.target_points_norm.nan_to_num(-1), again.target_points_norm.nan_to_num(-1))
    assert torch.equal(honest.head_points_norm.nan_to_num(-1), again.head_points_norm.nan_to_num(-1))

    n_gaze = len(kept)
    assert n_gaze > 0 and len(honest) > n_gaze  # gaze questions first, then grounding questions
    assert torch.isnan(honest.target_points_norm[:n_gaze]).all()  # no attention target for a gaze question
    for row in range(n_gaze, len(honest)):
        name = honest.answers[row]
        assert honest.questions[row] == GROUNDING_QUESTION.format(name)
        points = honest.target_points_norm[row]
        points = points[~torch.isnan(points[:, 0])]
        assert len(points) >= 1 and torch.isnan(honest.head_points_norm[row]).all()
    # the earlier, labelled variant does read gaze points: the same garbage changes its examples
    gaze, _ = build_examples(samples, processor, VqaConfig(), False, "gaze")
    gaze_garbage, _ = build_examples(garbage, processor, VqaConfig(), False, "gaze")
    assert not torch.equal(gaze.target_points_norm, gaze_garbage.target_points_norm)
