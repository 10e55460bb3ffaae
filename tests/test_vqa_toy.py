"""The Grad-CAM means something: on a toy VQA task whose answer lives in one image region, the peak is there.

Task: 48x48 grey-noise images with one coloured square (9-12 px, anywhere); "what color is the square?" ->
red / green / blue. A tiny BLIP (1 ViT layer, 6x6 patch grid) is trained from scratch for 200 steps (~15-30 s on
one busy core), with label smoothing so that answer probabilities stay below 1 (Grad-CAM reads gradients of the
probability, which vanish at p = 1). A map "hits" when its peak patch overlaps the square; chance is ~1/6.
"""

import numpy as np
import pytest
import torch

from gcdr.vqa.blip import as_vqa, build_blip_from_scratch
from gcdr.vqa.gradcam import GradcamConfig, VqaGradcam
from gcdr.vqa.prompt import PersonPrompt
from gcdr_tools.vqa_training import VqaExamples, answer_accuracy, preprocess_images, train_vqa

SIZE, PATCH = 48, 8
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
QUESTION = "what color is the square?"


def toy_images(n: int, rng: np.random.Generator):
    """n images [48, 48, 3] uint8, their answers and square boxes (x1, y1, x2, y2) px."""
    images, answers, boxes = [], [], []
    for _ in range(n):
        image = rng.integers(60, 180, (SIZE, SIZE, 1)).repeat(3, 2).astype(np.uint8)
        side = int(rng.integers(SIZE // 5, SIZE // 4 + 1))
        x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
        name = list(COLORS)[rng.integers(len(COLORS))]
        image[y:y + side, x:x + side] = COLORS[name]
        images.append(image)
        answers.append(name)
        boxes.append((x, y, x + side, y + side))
    return images, answers, boxes


def peak_hits_box(raw_map: np.ndarray, box) -> bool:
    row, col = np.unravel_index(np.argmax(raw_map), raw_map.shape)
    x1, y1, x2, y2 = col * PATCH, row * PATCH, (col + 1) * PATCH, (row + 1) * PATCH
    return min(x2, box[2]) > max(x1, box[0]) and min(y2, box[3]) > max(y1, box[1])


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, processor = build_blip_from_scratch(
            QUESTION.replace("?", " ?").split() + list(COLORS), image_size=SIZE, patch_size=PATCH,
            hidden_size=128, vision_layers=1, text_layers=2, heads=4, seed=0)
        vqa = as_vqa(model, processor, "cpu")
        images, answers, _ = toy_images(640, np.random.default_rng(0))
        examples = VqaExamples(preprocess_images(processor, images), [QUESTION] * len(images), answers)
        train_vqa(vqa, examples, epochs=10, batch_size=32, lr=1e-3, seed=0, progress=False,
                  label_smoothing=0.1)
        test_images, test_answers, test_boxes = toy_images(64, np.random.default_rng(100))
        test = VqaExamples(preprocess_images(processor, test_images), [QUESTION] * 64, test_answers)
        accuracy = answer_accuracy(vqa, test)["accuracy"]
        yield vqa, test_images, test_boxes, accuracy
    finally:
        torch.set_num_threads(threads)


def test_toy_model_learns_the_task(trained):
    *_, accuracy = trained
    assert accuracy >= 0.9


@pytest.mark.parametrize("method, layer, vision_module", [
    ("cross_attention", -1, "layer_norm1"),          # text-encoder cross-attention to the image tokens
    ("gradcamelementwise", -1, "embeddings"),        # pytorch-grad-cam on the ViT's input tokens
])
def test_gradcam_peak_is_on_the_square(trained, method, layer, vision_module):
    vqa, images, boxes, _ = trained
    explainer = VqaGradcam(vqa, GradcamConfig(method=method, layer=layer, vision_module=vision_module))
    results = explainer.explain([PersonPrompt(image, QUESTION, None) for image in images])
    hits = [r.raw_map.max() > 0 and peak_hits_box(r.raw_map, box) for r, box in zip(results, boxes)]
    chance = np.mean([np.mean([peak_hits_box(np.eye(36)[k].reshape(6, 6), box) for k in range(36)])
                      for box in boxes])
    assert chance < 0.25
    assert np.mean(hits) >= 0.5, f"{method}: peak on the square for {np.mean(hits):.2f} of images"
