"""Stage 1: prompting, Grad-CAM families, the pseudo-label folder it writes, resume, batching, the CLI.

A tiny BLIP is built from a config, saved with save_pretrained and loaded through ``load_vqa`` (the path real users
take); its weights are random, so these tests check mechanics. tests/test_vqa_toy.py checks that the maps mean
something on a trained model.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gcdr.data.sample import PersonSample
from gcdr.pseudolabels import PseudoLabelFolder, PseudoLabelWriter
from gcdr.vqa.annotate import cam_to_pseudolabel, gradcam_pseudolabels
from gcdr.vqa.blip import VqaConfig, build_blip_from_scratch, load_vqa
from gcdr.vqa.gradcam import CamResult, GradcamConfig, VqaGradcam
from gcdr.vqa.prompt import box_line_width, marked_box, person_prompt

VAT_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"
WORDS = "what is the person in green bounding box looking at ? cup ball book phone".split()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads are slower, and results stay reproducible
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, processor = build_blip_from_scratch(WORDS, image_size=48, patch_size=8, hidden_size=32,
                                               vision_layers=2, text_layers=2, heads=2, seed=0)
    folder = tmp_path_factory.mktemp("tiny_blip")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vqa(model_dir):
    return load_vqa(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three drawn images with 1, 2 and 3 persons (one person with a body box); returns PersonSamples."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    samples = []
    for image_index, n_persons in enumerate((1, 2, 3)):
        image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
        cv2.circle(image, (90, 60), 12, (255, 0, 0), -1)
        path = folder / f"img{image_index}.png"
        cv2.imwrite(str(path), image)
        for person in range(n_persons):
            x = 10 + 35 * person
            body = (x - 4.0, 30.0, x + 30.0, 88.0) if (image_index, person) == (1, 1) else None
            samples.append(PersonSample(sample_id=f"img{image_index}|p{person}", image_path=str(path),
                                        head_box_xyxy_px=(float(x), 10.0, x + 20.0, 30.0), body_box_xyxy_px=body,
                                        source=f"scenes:{len(samples) + 1}"))
    return samples


# ---------------------------------------------------------------------------------------------- prompting


def test_box_line_width_scales_with_the_image():
    assert box_line_width(120, 90) == 2
    assert box_line_width(1920, 1080) == 5


def test_prompt_draws_the_body_box_else_the_head_box(scenes):
    image = np.zeros((90, 120, 3), np.uint8)
    with_body = scenes[2]
    assert marked_box(with_body) == with_body.body_box_xyxy_px
    prompt = person_prompt(image, with_body, "q?")
    x1, y1 = (int(v) for v in with_body.body_box_xyxy_px[:2])
    assert tuple(prompt.image_rgb[y1, x1 + 5]) == (0, 255, 0)  # green on the top edge of the body box
    head_only = scenes[0]
    prompt = person_prompt(image, head_only, "q?")
    assert prompt.box_xyxy_px == head_only.head_box_xyxy_px and prompt.question == "q?"
    assert image.sum() == 0  # the caller's image is not modified
    gcdr_rule = person_prompt(image, head_only, "q?", fallback_question="plain?", mark="body_only")
    assert gcdr_rule.box_xyxy_px is None and gcdr_rule.question == "plain?" and gcdr_rule.image_rgb.sum() == 0


# ---------------------------------------------------------------------------------------------- Grad-CAM


def test_explain_gives_a_raw_map_on_the_patch_grid(vqa, scenes):
    image = cv2.cvtColor(cv2.imread(scenes[0].image_path), cv2.COLOR_BGR2RGB)
    prompts = [person_prompt(image, scenes[0], VqaConfig().question)]
    for method in ("cross_attention", "gradcamelementwise", "gradcam", "eigencam"):
        (result,) = VqaGradcam(vqa, GradcamConfig(method=method)).explain(prompts)
        assert result.raw_map.shape == vqa.patch_grid_hw == (6, 6)
        assert result.raw_map.dtype == np.float32 and np.all(result.raw_map >= 0)
        assert result.answer and result.key_noun and 0 < result.score <= 1


@pytest.mark.parametrize("method, vision_module", [("cross_attention", "layer_norm1"),
                                                   ("gradcamelementwise", "embeddings"),
                                                   ("gradcam++", "layer_norm1")])
def test_batched_equals_per_person(vqa, scenes, method, vision_module):
    cache = {}
    prompts = []
    for sample in scenes:
        cache.setdefault(sample.image_path, cv2.cvtColor(cv2.imread(sample.image_path), cv2.COLOR_BGR2RGB))
        prompts.append(person_prompt(cache[sample.image_path], sample, VqaConfig().question))
    explainer = VqaGradcam(vqa, GradcamConfig(method=method, vision_module=vision_module))
    batched = explainer.explain(prompts)
    single = [explainer.explain([p])[0] for p in prompts]
    for b, s in zip(batched, single):
        assert b.answer == s.answer and b.key_noun == s.key_noun
        scale = max(np.abs(s.raw_map).max(), 1e-30)
        np.testing.assert_allclose(b.raw_map / scale, s.raw_map / scale, atol=2e-3)
        assert b.score == pytest.approx(s.score, rel=1e-4)


def test_prompts_of_different_question_lengths_in_one_batch(vqa, scenes):
    image = cv2.cvtColor(cv2.imread(scenes[0].image_path), cv2.COLOR_BGR2RGB)
    long_q = person_prompt(image, scenes[0], VqaConfig().question)
    short_q = person_prompt(image, scenes[0], "q", fallback_question="what is the person looking at?",
                            mark="body_only")
    explainer = VqaGradcam(vqa, GradcamConfig())
    mixed = explainer.explain([long_q, short_q, long_q])
    alone = explainer.explain([short_q])[0]
    np.testing.assert_allclose(mixed[1].raw_map, alone.raw_map, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(mixed[0].raw_map, mixed[2].raw_map, rtol=1e-5, atol=1e-12)


@pytest.mark.skipif(not (VAT_DEMO / "person1.txt").is_file(), reason="needs ../shared/data/vat-demo beside the repository")
def test_two_persons_on_a_real_frame_get_different_maps(vqa):
    frame = "00002575.jpg"
    image = cv2.cvtColor(cv2.imread(str(VAT_DEMO / "frames" / frame)), cv2.COLOR_BGR2RGB)
    persons = []
    for file in ("person1.txt", "person2.txt"):
        row = next(line for line in (VAT_DEMO / file).read_text().splitlines() if line.startswith(frame))
        box = tuple(float(v) for v in row.split(",")[1:5])
        persons.append(PersonSample(sample_id=f"{frame}|{file}", image_path="", head_box_xyxy_px=box))
    prompts = [person_prompt(image, p, VqaConfig().question) for p in persons]
    assert not np.array_equal(prompts[0].image_rgb, prompts[1].image_rgb)
    for method in ("cross_attention", "gradcamelementwise"):
        first, second = VqaGradcam(vqa, GradcamConfig(method=method)).explain(prompts)
        assert first.raw_map.shape == second.raw_map.shape == (6, 6)
        assert not np.allclose(first.raw_map, second.raw_map, rtol=1e-3, atol=0)


def test_unknown_method_and_bad_layer_are_errors(vqa):
    with pytest.raises(ValueError, match="method"):
        GradcamConfig(method="scorecam")
    with pytest.raises(ValueError, match="layer"):
        VqaGradcam(vqa, GradcamConfig(layer=5))


def test_invalid_results_are_flagged_not_dropped(scenes):
    sample = scenes[0]
    cases = {"no_answer": CamResult("", "", "", None, float("nan")),
             "nan": CamResult("cup", "cup", "cup", np.full((6, 6), np.nan, np.float32), 0.5),
             "all_zero": CamResult("cup", "cup", "cup", np.zeros((6, 6), np.float32), 0.5)}
    for reason, result in cases.items():
        label = cam_to_pseudolabel(sample, result)
        assert not label.valid and label.invalid_reason == reason
        assert label.heatmap_64.shape == (64, 64) and not label.heatmap_64.any()
    raw = np.zeros((6, 6), np.float32)
    raw[1, 4] = 3.0
    label = cam_to_pseudolabel(sample, CamResult("a cup", "cup", "cup", raw, 0.5))
    assert label.valid and label.heatmap_64.max() == pytest.approx(1.0) and label.heatmap_64.min() == 0.0
    row, col = np.unravel_index(np.argmax(label.heatmap_64), (64, 64))
    assert row // (64 // 6) == 1 and col // (64 // 6) == 4  # the peak stays where the raw map had it


# ---------------------------------------------------------------------------------------------- the folder


def _run(vqa, samples, folder, per_person=False, loader=None, previews=0):
    explainer = VqaGradcam(vqa, GradcamConfig(batch_size=2), VqaConfig())
    with PseudoLabelWriter(folder, shard="rank0", chunk_size=2, max_previews=previews) as writer:
        return gradcam_pseudolabels(samples, explainer, writer, VqaConfig(), per_person=per_person,
                                    progress=False, image_loader=loader)


def test_folder_format_one_row_per_person(vqa, scenes, tmp_path):
    missing = PersonSample(sample_id="gone|p0", image_path=str(tmp_path / "gone.png"),
                           head_box_xyxy_px=(1.0, 1.0, 5.0, 5.0), source="scenes:99")
    explainer = VqaGradcam(vqa, GradcamConfig(batch_size=4), VqaConfig())
    with PseudoLabelWriter(tmp_path / "out", chunk_size=4, max_previews=2) as writer:
        stats = gradcam_pseudolabels([*scenes, missing], explainer, writer, VqaConfig(), on_error="skip",
                                     progress=False)
    assert stats.persons == 7 and stats.image_errors == 1
    folder = PseudoLabelFolder(tmp_path / "out")
    assert sorted(folder.sample_ids) == sorted([s.sample_id for s in scenes] + ["gone|p0"])
    assert not folder.is_valid("gone|p0") and folder.get("gone|p0").invalid_reason == "image_error"
    for sample in scenes:
        label = folder.get(sample.sample_id)
        assert label.answer and label.key_noun  # recorded in the manifest
        assert label.valid == (label.invalid_reason == "")
        if label.valid:
            assert label.raw_map.shape == (6, 6)
            assert label.heatmap_64.shape == (64, 64)
            assert label.heatmap_64.min() == 0.0 and label.heatmap_64.max() == pytest.approx(1.0, abs=1e-3)
    assert len(list((tmp_path / "out" / "previews").glob("*.png"))) == 2
    with pytest.raises(Exception, match="gone.png"):
        _run(vqa, [missing], tmp_path / "raise")


def test_resume_after_interruption_equals_one_run(vqa, scenes, tmp_path):
    _run(vqa, scenes, tmp_path / "once")
    loads = {"n": 0}

    def flaky_loader(path):
        loads["n"] += 1
        if loads["n"] > 2:  # dies while loading the third image (after the first batches were written)
            raise KeyboardInterrupt
        return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)

    with pytest.raises(KeyboardInterrupt):
        _run(vqa, scenes, tmp_path / "twice", loader=flaky_loader)
    partial = PseudoLabelFolder(tmp_path / "twice")
    assert 0 < len(partial) < len(scenes)
    stats = _run(vqa, scenes, tmp_path / "twice")
    assert stats.skipped_done == len(partial) and stats.persons == len(scenes) - len(partial)
    once, twice = PseudoLabelFolder(tmp_path / "once"), PseudoLabelFolder(tmp_path / "twice")
    assert sorted(once.sample_ids) == sorted(twice.sample_ids)
    for sample_id in once.sample_ids:
        a, b = once.get(sample_id), twice.get(sample_id)
        assert (a.answer, a.key_noun, a.valid) == (b.answer, b.key_noun, b.valid)
        np.testing.assert_allclose(a.heatmap_64, b.heatmap_64, atol=2e-3)  # float16 storage
        np.testing.assert_allclose(a.raw_map, b.raw_map, rtol=1e-4, atol=1e-12)


def test_per_person_path_writes_the_same_folder(vqa, scenes, tmp_path):
    _run(vqa, scenes, tmp_path / "batched")
    _run(vqa, scenes, tmp_path / "single", per_person=True)
    batched, single = PseudoLabelFolder(tmp_path / "batched"), PseudoLabelFolder(tmp_path / "single")
    for sample_id in batched.sample_ids:
        np.testing.assert_allclose(batched.heatmap_64(sample_id), single.heatmap_64(sample_id), atol=5e-3)


# ---------------------------------------------------------------------------------------------- the CLI


def test_pipeline_cli_writes_a_finalized_folder(model_dir, tmp_path):
    from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze
    from pipelines import gradcam as gradcam_pipeline

    data = tmp_path / "data"
    generate_synthgaze(data, SynthConfig(train_persons=5, test_persons=1, image_size=(96, 128)), progress=False)
    overrides = [f"dataset.root={data}", f"out_root={tmp_path / 'out'}", f"vqa.model={model_dir}",
                 "vqa.device=cpu", "gradcam.split=train", "gradcam.batch_size=4", "gradcam.previews=1"]
    args = ["--no-progress"] + [item for o in overrides for item in ("--set", o)]
    summary = gradcam_pipeline.main(args)
    out = tmp_path / "out" / "pseudo" / "gradcam-train"
    assert summary["persons"] == 5 and summary["missing"] == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["status"] == "done" and provenance["method"] == "cross_attention"
    assert provenance["model"] == str(model_dir) and provenance["question"] == VqaConfig().question
    assert len(PseudoLabelFolder(out)) == 5 and len(list((out / "previews").glob("*.png"))) == 1
    assert gradcam_pipeline.main(args)["persons"] == 5  # rerun: everything already done, nothing duplicated


def test_benchmark_reports_both_paths():
    from gcdr_tools.bench.vqa import benchmark_gradcam

    result = benchmark_gradcam({"image_size": 48, "hidden_size": 32, "vision_layers": 1, "heads": 2},
                               n_persons=4, batch_size=4, device="cpu")
    assert result["persons"] == 4 and result["memory"] == "process_peak_rss"
    assert result["batched_persons_per_s"] > 0 and result["per_person_persons_per_s"] > 0
    assert result["batched_peak_mb"] > 0


def test_a_missing_vqa_model_says_what_to_run(tmp_path, monkeypatch):
    from gcdr.errors import UserError
    from gcdr.vqa.blip import load_vqa

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"make synth-vqa.*HF_HUB_OFFLINE=0"):
        load_vqa("data/no_such_stand_in", "cpu")  # looks like owner/name: a folder, or a hub id not cached
    with pytest.raises(UserError, match=r"VQA model folder .*nowhere does not exist: run `make synth-vqa`"):
        load_vqa(str(tmp_path / "deeper" / "nowhere"), "cpu")
