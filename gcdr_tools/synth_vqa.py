"""The SynthGaze VQA model: a small BLIP trained from scratch to answer "what is the person in the green bounding
box looking at?" on SynthGaze scenes. It stands in, offline, for the pretrained BLIP VQA model of stage 1.

Which persons it learns from (``synth_vqa.source``):
  ``independent`` (default) a separate SynthGaze draw (seed ``synth.seed + 1000``, ``synth_vqa.persons`` train
                persons, written under ``<out_root>/synth_vqa_data``). Like BLIP, pretrained on other images, the
                model never sees the stage's own persons or their answers, so stage-1 maps on the unlabeled
                split carry no leaked labels.
  ``labeled``   the labeled split only (answers known in the semi-supervised protocol; few persons).
  ``train``     every train person, labeled and unlabeled: leaks the unlabeled persons' target names into the
                pseudo-labels (an upper bound, for ablations only; a warning says so).
Answers: the target object's name from the meta column (``synth:target=cup`` -> "cup"). Out-of-frame persons
(``synth:target=none``) are skipped: their honest answer would be "nothing", which has no location to explain,
and GCDR drops out-of-frame persons from pseudo-labelling anyway (docs/method.md#out-of-frame-persons).
Prompts are built by the same code as stage 1 (gcdr.vqa.prompt), so training and Grad-CAM see the same inputs.
What it is supervised with (``synth_vqa.supervision``):
  ``grounding`` (default, honest) what a VQA model pretrained on image-text data learns, and nothing more:
                the answer of the gaze question (the looked-at object's name), and "where is the <name>?"
                questions on the plain image whose cross-attention is pulled towards every object of that
                name (object boxes from the draw's objects file: region-text grounding, as detection and
                grounding data teach BLIP-like models), plus, for the gaze question, the layer before the
                read-out layer towards the green-boxed person's head (the box the question refers to). No gaze
                point of any person is read: the map stage 1 reads from the gaze question carries gaze
                information only through the answer, as BLIP's does.
  ``gaze``      (the earlier stand-in, kept for comparison) the read-out layer's cross-attention of the gaze
                question is pulled towards each training person's gaze point: the VQA model is taught where
                persons look, which a model pretrained on captions never is.
Training runs a fixed number of steps (epochs x batches): the same seed gives the same model on any machine.
Accuracy = exact match of the greedy answer on the in-frame persons of the SynthGaze test split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gcdr import paths
from gcdr.atomic import write_json_atomic
from gcdr.config import RunConfig, section
from gcdr.data.sample import PersonSample
from gcdr.stage_output import StageOutput
from gcdr.vqa.blip import VqaConfig, as_vqa, build_blip_from_scratch, pick_device
from gcdr.vqa.prompt import person_prompt
from gcdr_tools.vqa_training import VqaExamples, answer_accuracy, preprocess_images, train_vqa

log = logging.getLogger(__name__)

SOURCES = ("independent", "labeled", "train")
SUPERVISIONS = ("grounding", "gaze")
GROUNDING_QUESTION = "where is the {}?"
POSITION_INITS = ("random", "sincos")
SINCOS_SD = 0.3  # sd of the sine-cosine position embeddings: about that of the initial patch embeddings
INDEPENDENT_SEED_OFFSET = 1000
METRICS_FILE = "metrics.json"
STAGE = "synth_vqa"
MODEL_NAME = "BlipForQuestionAnswering (from scratch)"


@dataclass
class SynthVqaConfig:
    """Config section ``synth_vqa:`` (``make synth-vqa``).

    epochs, batch_size, lr, seed: training; image_size: square BLIP input in pixels; patch_size: ViT patch
    (Grad-CAM grid = image_size // patch_size); hidden_size, vision_layers, text_layers, heads: architecture.
    source: ``independent`` | ``labeled`` | ``train`` (see the module docstring); persons: size of the
    independent draw; supervision: ``grounding`` | ``gaze`` (module docstring); grounding_per_image: "where is
    the <name>?" questions per image of the draw (distinct names, grounding only); label_smoothing: of the
    answer loss (keeps answer probabilities below 1, where Grad-CAM's gradients would vanish); attention_weight:
    weight of the attention supervision of the text encoder's cross-attention layer ``gradcam.layer`` towards the
    training persons' gaze points (0 = answers only; see gcdr_tools.vqa_training); attention_sigma: sd of its Gaussian
    target in patches; head_attention_weight: weight of the supervision of the layer before ``gradcam.layer``
    towards the person's head (0 = off; needs a text layer before it, e.g. text_layers 3 with layer -2).
    position_init: ``random`` (transformers' default, sd 0.02: the patches hardly know where they are at first)
    or ``sincos`` (2D sine-cosine position embeddings, still trained; ``sincos_position_embeddings``).
    """

    epochs: int = 8
    batch_size: int = 32
    lr: float = 0.001
    image_size: int = 96
    seed: int = 0
    patch_size: int = 8
    hidden_size: int = 128
    vision_layers: int = 2
    text_layers: int = 2
    heads: int = 4
    source: str = "independent"
    persons: int = 3000
    supervision: str = "grounding"
    grounding_per_image: int = 2
    label_smoothing: float = 0.1
    attention_weight: float = 2.0
    attention_sigma: float = 1.0
    head_attention_weight: float = 0.0
    position_init: str = "random"

    def __post_init__(self) -> None:
        if self.position_init not in POSITION_INITS:
            raise ValueError(f"synth_vqa.position_init = {self.position_init!r}; choose one of {list(POSITION_INITS)}")
        if self.supervision not in SUPERVISIONS:
            raise ValueError(f"synth_vqa.supervision = {self.supervision!r}; choose one of {list(SUPERVISIONS)}")
        if self.grounding_per_image < 0:
            raise ValueError(f"synth_vqa.grounding_per_image must be >= 0, got {self.grounding_per_image}")
        if self.source not in SOURCES:
            raise ValueError(f"synth_vqa.source = {self.source!r}; choose one of {list(SOURCES)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"synth_vqa.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


def sincos_position_embeddings(grid_hw: tuple[int, int], dim: int, sd: float = SINCOS_SD) -> torch.Tensor:
    """2D sine-cosine position embeddings of the image [CLS] + a ``grid_hw`` patch grid -> [1 + h*w, dim].

    Half the channels encode the column, half the row, each as sin/cos pairs at geometric frequencies from
    pi / (2 * grid side) (half a period across the image) to 2 radians per patch; the [CLS] row is zero; scaled to standard deviation ``sd``. Dot products of these vectors depend on
    patch distances, so the cross-attention can express "near this point" from the first step on.
    """
    if dim % 4:
        raise ValueError(f"sine-cosine position embeddings need hidden_size divisible by 4, got {dim}")
    height, width = grid_hw
    quarter = dim // 4
    lowest = math.pi / (2 * max(height, width))
    frequencies = lowest * (2.0 / lowest) ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter - 1))
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
    angles_x = cols.flatten()[:, None] * frequencies[None]  # [h*w, dim/4]
    angles_y = rows.flatten()[:, None] * frequencies[None]
    table = torch.cat([angles_x.sin(), angles_x.cos(), angles_y.sin(), angles_y.cos()], dim=1)  # [h*w, dim]
    table = table / table.std() * sd
    return torch.cat([torch.zeros(1, dim), table])


def words_of(text: str) -> list[str]:
    """Lower-case words and punctuation marks as BERT's pre-tokenizer splits them."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def answer_of(sample: PersonSample) -> str | None:
    """The SynthGaze answer of a person: its target object's name; None when out of frame or not SynthGaze."""
    from gcdr_tools.synthgaze import target_name

    return target_name(sample.meta)


def build_examples(samples: Sequence[PersonSample], processor, vqa_cfg: VqaConfig, progress: bool = True,
                   supervision: str = "grounding", objects: dict[str, list] | None = None,
                   grounding_per_image: int = 2, seed: int = 0) -> tuple[VqaExamples, list[PersonSample]]:
    """The training or test examples of the SynthGaze VQA model.

    Every sample with an answer gives a gaze question (its box drawn as in stage 1, the answer its target's
    name, the head-box centre for the head-attention supervision; with ``supervision="gaze"`` also its mean gaze
    point as attention target, else none). With ``supervision="grounding"`` and ``objects`` (image path ->
    [(name, box_xyxy_px), ...], keyed by resolved paths), every image also gives up to ``grounding_per_image`` "where is the <name>?"
    questions on the plain image, answered by the name, whose attention targets are the box centres of every
    object of that name. Gaze points are read only with ``supervision="gaze"``.
    Returns the examples and the samples with an answer (same order as their gaze questions, which come first).
    """
    from gcdr.data.images import load_image_rgb

    if supervision not in SUPERVISIONS:
        raise ValueError(f"supervision must be one of {SUPERVISIONS}, got {supervision!r}")
    kept = [s for s in samples if answer_of(s) is not None]
    images, questions, answers, head_points, target_points = [], [], [], [], []
    cache: dict[str, np.ndarray] = {}
    for sample in tqdm(kept, desc="prompts", unit="person", disable=not progress):
        if sample.image_path not in cache:
            cache = {sample.image_path: load_image_rgb(sample.image_path)}  # persons of an image are adjacent
        prompt = person_prompt(cache[sample.image_path], sample, vqa_cfg.question, vqa_cfg.fallback_question,
                               vqa_cfg.mark)
        images.append(prompt.image_rgb)
        questions.append(prompt.question)
        answers.append(answer_of(sample))
        height, width = prompt.image_rgb.shape[:2]
        x1, y1, x2, y2 = sample.head_box_xyxy_px
        head_points.append(((x1 + x2) / 2 / width, (y1 + y2) / 2 / height))
        target_points.append([tuple(sample.mean_gaze_point_norm)] if supervision == "gaze" else [])
    if supervision == "grounding" and objects and grounding_per_image > 0:
        images_in_order = list(dict.fromkeys(s.image_path for s in samples))
        for image_index, image_path in enumerate(tqdm(images_in_order, desc="grounding", unit="image",
                                                      disable=not progress)):
            drawn = objects.get(str(Path(image_path).resolve()), [])
            names = sorted({name for name, _ in drawn})
            if not names:
                continue
            image = load_image_rgb(image_path)
            height, width = image.shape[:2]
            rng = np.random.default_rng([seed, image_index])  # not the path: the same draw wherever the repo is
            for name in rng.permutation(names)[:grounding_per_image].tolist():
                images.append(image)
                questions.append(GROUNDING_QUESTION.format(name))
                answers.append(name)
                head_points.append((math.nan, math.nan))
                target_points.append([((b[0] + b[2]) / 2 / width, (b[1] + b[3]) / 2 / height)
                                      for n, b in drawn if n == name])
    pixels = preprocess_images(processor, images) if images else None
    most = max((len(p) for p in target_points), default=0)
    points = torch.full((len(images), max(1, most), 2), math.nan)  # [N, K, 2], NaN = no attention target
    for row, row_points in enumerate(target_points):
        if row_points:
            points[row, :len(row_points)] = torch.tensor(row_points, dtype=torch.float32)
    heads = torch.tensor(head_points if images else np.zeros((0, 2)), dtype=torch.float32)  # [N, 2]
    return VqaExamples(pixels, questions, answers, points, heads), kept


def _independent_draw(cfg: dict[str, Any], train_cfg: SynthVqaConfig, progress: bool
                      ) -> tuple[list[PersonSample], dict[str, list]]:
    """The independent SynthGaze draw's persons and its objects (image path -> [(name, box_xyxy_px), ...])."""
    from gcdr.data.gazefollow import read_gazefollow
    from gcdr_tools.synthgaze import TRAIN_PERSONDET_FILE, SynthConfig, generate_synthgaze, read_objects

    synth = section(cfg, "synth", SynthConfig)
    draw = dataclasses.replace(synth, seed=synth.seed + INDEPENDENT_SEED_OFFSET, train_persons=train_cfg.persons,
                               test_persons=0, write_objects=True)
    data_dir = paths.out_root(cfg) / "synth_vqa_data"
    generate_synthgaze(data_dir, draw, progress=progress)
    samples = read_gazefollow(data_dir / TRAIN_PERSONDET_FILE, data_dir)
    objects = {str((data_dir / path).resolve()): drawn for path, drawn in read_objects(data_dir, "train").items()}
    return samples, objects


def training_samples(cfg: dict[str, Any], train_cfg: SynthVqaConfig, progress: bool = True
                     ) -> tuple[list[PersonSample], dict[str, list] | None]:
    """The persons the SynthGaze VQA model learns from (``synth_vqa.source``), before dropping unanswerable ones,
    and the objects of their images (None when unknown: no grounding questions then)."""
    from gcdr.data import load_samples

    if train_cfg.source == "independent":
        return _independent_draw(cfg, train_cfg, progress)
    if train_cfg.source == "train":
        log.warning("synth_vqa.source=train: the VQA model learns the unlabeled persons' answers "
                    "(label leakage into stage 1; use for upper-bound ablations only)")
    return load_samples(cfg, train_cfg.source), None


def vocabulary(vqa_cfg: VqaConfig) -> list[str]:
    """Tokenizer words: the question words (both questions) + SynthGaze's object names + "nothing"."""
    from gcdr_tools.synthgaze import OBJECT_NAMES

    return list(dict.fromkeys(words_of(vqa_cfg.question) + words_of(vqa_cfg.fallback_question)
                              + words_of(GROUNDING_QUESTION.format("")) + list(OBJECT_NAMES) + ["nothing"]))


def _move_into(tmp_dir: Path, out_dir: Path) -> None:
    """Move the files of ``tmp_dir`` (a complete save) into the claimed ``out_dir``, then remove ``tmp_dir``."""
    for path in sorted(tmp_dir.iterdir()):
        target = out_dir / path.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(path, target)
    tmp_dir.rmdir()


def _supervised_layer(cfg: dict[str, Any]) -> int:
    """The text-encoder layer whose cross-attention is supervised: ``gradcam.layer`` for the cross_attention
    Grad-CAM (the maps stage 1 reads), else -2."""
    from gcdr.vqa.gradcam import CROSS_ATTENTION, GradcamConfig

    cam_cfg = section(cfg, "gradcam", GradcamConfig)
    return cam_cfg.layer if cam_cfg.method == CROSS_ATTENTION else -2


def synth_vqa_request(cfg: RunConfig) -> dict[str, Any]:
    """What the SynthGaze VQA model is a function of (gcdr.stage_output): the ``synth_vqa:`` and ``vqa:`` sections
    (but ``vqa.model``, where it is written), the supervised layer, the dataset (test persons; the training
    persons with ``source`` labeled / train), the ``synth:`` section of the independent draw, the split with
    ``source: labeled``. Sections a source does not read are left out, so e.g. another split.ratio does not
    touch the model of the independent draw."""
    train_cfg = cfg.synth_vqa
    request: dict[str, Any] = {"synth_vqa": dataclasses.asdict(train_cfg),
                               "vqa": {k: v for k, v in dataclasses.asdict(cfg.vqa).items() if k != "model"},
                               "supervised_layer": _supervised_layer(cfg), "dataset": dataclasses.asdict(cfg.dataset)}
    if train_cfg.source == "independent":
        request["synth"] = cfg.synth.to_dict()
    if train_cfg.source == "labeled":
        request["split"] = dataclasses.asdict(cfg.split)
    return request


def run_synth_vqa(cfg: dict[str, Any], restart: bool = False, progress: bool = True) -> dict[str, Any]:
    """`make synth-vqa`: claim ``vqa.model`` for this config's request (gcdr.stage_output) and train the model
    there, or return its metrics when this request is done already. Another request's model is refused with one
    line naming what differs (``restart`` empties the folder and trains again)."""
    cfg = RunConfig(cfg)
    out_dir = Path(cfg.vqa.model)
    with StageOutput(out_dir, STAGE, synth_vqa_request(cfg), config=cfg, restart=restart,
                     out_option="another vqa.model") as output:
        if output.done() and (out_dir / METRICS_FILE).is_file():
            metrics = json.loads((out_dir / METRICS_FILE).read_text())
            log.info("SynthGaze VQA model in %s is up to date (test accuracy %.3f); --restart to train it again",
                     out_dir, metrics["test_accuracy"])
            return metrics
        output.start(model=MODEL_NAME)
        return train_synth_vqa(cfg, output, progress=progress)


def train_synth_vqa(cfg: dict[str, Any], output: StageOutput, progress: bool = True) -> dict[str, Any]:
    """Train the SynthGaze VQA model and save it (model + processor, ``save_pretrained``) into ``output``'s folder
    (``vqa.model``, claimed by :func:`run_synth_vqa`).

    Writes ``metrics.json`` (test accuracy, counts, timings) and ``provenance.json`` (status "done") into the model
    directory; the files are saved into a temporary sibling first and moved in once complete, provenance last.
    Returns the metrics.
    """
    vqa_cfg = section(cfg, "vqa", VqaConfig)
    train_cfg = section(cfg, "synth_vqa", SynthVqaConfig)
    from gcdr.data import load_samples

    start = time.perf_counter()
    torch.manual_seed(train_cfg.seed)
    model, processor = build_blip_from_scratch(
        vocabulary(vqa_cfg), image_size=train_cfg.image_size, patch_size=train_cfg.patch_size,
        hidden_size=train_cfg.hidden_size, vision_layers=train_cfg.vision_layers,
        text_layers=train_cfg.text_layers, heads=train_cfg.heads, seed=train_cfg.seed)
    if train_cfg.position_init == "sincos":
        grid_hw = (train_cfg.image_size // train_cfg.patch_size,) * 2
        with torch.no_grad():
            model.vision_model.embeddings.position_embedding.copy_(
                sincos_position_embeddings(grid_hw, train_cfg.hidden_size)[None])
    vqa = as_vqa(model, processor, pick_device(vqa_cfg.device), model_id="synth_vqa")

    samples, objects = training_samples(cfg, train_cfg, progress)
    train_examples, train_kept = build_examples(samples, processor, vqa_cfg, progress, train_cfg.supervision,
                                                objects, train_cfg.grounding_per_image, train_cfg.seed)
    if len(train_examples) == 0:
        raise ValueError(f"synth_vqa: no training person has a SynthGaze answer (source={train_cfg.source})")
    test_examples, _ = build_examples(load_samples(cfg, "test"), processor, vqa_cfg, progress, supervision="grounding")
    log.info("synth_vqa: %d training persons (%s) + %d grounding questions, %d test persons", len(train_kept),
             train_cfg.source, len(train_examples) - len(train_kept), len(test_examples))
    training = train_vqa(vqa, train_examples, train_cfg.epochs, train_cfg.batch_size, train_cfg.lr,
                         seed=train_cfg.seed, progress=progress,
                         label_smoothing=train_cfg.label_smoothing, attention_weight=train_cfg.attention_weight,
                         attention_layer=_supervised_layer(cfg), attention_sigma=train_cfg.attention_sigma,
                         head_attention_weight=train_cfg.head_attention_weight)
    train_eval_n = min(len(train_examples), 500)
    train_accuracy = answer_accuracy(vqa, VqaExamples(train_examples.pixel_values[:train_eval_n],
                                                      train_examples.questions[:train_eval_n],
                                                      train_examples.answers[:train_eval_n]))["accuracy"]
    test = answer_accuracy(vqa, test_examples) if len(test_examples) else {"accuracy": float("nan"), "n": 0,
                                                                            "answers": []}
    gaze_answers = train_examples.answers[:len(train_kept)]  # the gaze questions come first
    majority = max(set(gaze_answers), key=gaze_answers.count)
    metrics = {
        "test_accuracy": test["accuracy"], "test_persons": test["n"],
        "train_accuracy_first500": train_accuracy, "train_persons": len(train_kept),
        "grounding_examples": len(train_examples) - len(train_kept), "supervision": train_cfg.supervision,
        "majority_answer": majority,
        "majority_baseline_test": float(np.mean([a == majority for a in test_examples.answers]))
        if len(test_examples) else float("nan"),
        "source": train_cfg.source, **training, "total_seconds": time.perf_counter() - start,
        "grid_hw": list(vqa.patch_grid_hw),
    }
    out_dir = output.folder
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    vqa.model.save_pretrained(tmp_dir)
    processor.save_pretrained(tmp_dir)
    write_json_atomic(tmp_dir / METRICS_FILE, metrics)
    _move_into(tmp_dir, out_dir)
    output.finish(model=MODEL_NAME, training_persons=len(train_kept), metrics=metrics)
    log.info("synth_vqa: test accuracy %.3f on %d persons (majority baseline %.3f), %d steps in %.0f s -> %s",
             metrics["test_accuracy"], metrics["test_persons"], metrics["majority_baseline_test"],
             metrics["steps"], metrics["total_seconds"], out_dir)
    return metrics
