"""Grad-CAM of a BLIP VQA answer: where in the image the model finds the thing it names (GCDR, docs/method.md#grad-cam-map).

Target (both families): the score of the key-noun token under teacher forcing. The answer decoder reads
[BOS] + answer tokens; the logits at position ``step`` predict answer token ``step`` (the key noun's sub-token),
so one causal forward of the whole answer gives the same logits as feeding [BOS] + tokens[:step].
Score = softmax probability (GCDR, ``target: prob``), log-probability (``logprob``) or the logit (``logit``).

Families, chosen by ``gradcam.method``:

``cross_attention`` (GCDR's own recipe transposed to BLIP)
    GCDR (OFA) takes ReLU(grad * attention) of the answer decoder's cross-attention to the image tokens.
    In BLIP the answer decoder cross-attends to the *question encoding*, not to the image: the image enters
    through the text encoder's cross-attention (question tokens -> image tokens). So the map is taken there:
    A = cross-attention probabilities of text-encoder layer ``gradcam.layer`` (default -2, the analogue of
    GCDR's second-to-last layer), G = dScore/dA, cam = mean over heads of ReLU(G * A) -> [Lq, 1 + h*w];
    the image [CLS] key is dropped -> [Lq, h, w]; then the question positions are averaged
    (``query: mean``, default, over the non-padding tokens [CLS] ... [SEP]) or only [CLS] is kept
    (``query: cls``). Averaging is the default because the answer decoder reads every question position, so
    image evidence can reach the answer through any of them (the gradient already weights the positions
    that matter); [CLS] alone misses the paths through the other positions. Raw maps are not normalised.
    Gradients flow only through the text networks (the ViT runs without a graph), which keeps it fast.

pytorch-grad-cam methods (``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``, ``eigencam``,
``eigengradcam``, ``hirescam``, ``gradcamelementwise``)
    On a ViT module of the vision model: ``vision_model.encoder.layers[layer].layer_norm1`` (``vision_module:
    layer_norm1``, the usual ViT choice) or the block's output (``vision_module: output``); tokens
    [B, 1 + h*w, D] -> [B, D, h, w] without the [CLS] token. The BLIP model is wrapped so that its output is the
    target score [B, 1]; the method's own weighting gives the raw [h, w] map (ReLU applied, no min-max, no
    upsampling: those happen when the pseudo-label is stored).

Batching: the persons of a batch never interact (no batch norm; padding masked), so one backward of the summed
scores gives each person the gradient of its own score; batched maps equal one-by-one maps up to float error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gcdr.vqa.blip import (
    Vqa,
    VqaConfig,
    answer_logits,
    encode_images,
    encode_questions,
    generate_answers,
    image_embeddings,
    question_embeddings,
)
from gcdr.vqa.keynoun import AnswerTokens, answer_tokens
from gcdr.vqa.prompt import PersonPrompt

CROSS_ATTENTION = "cross_attention"
TARGETS = ("prob", "logprob", "logit")
QUERIES = ("mean", "cls")
VISION_MODULES = ("layer_norm1", "output", "embeddings")


def _pytorch_gradcam_classes() -> dict:
    from pytorch_grad_cam import (
        EigenCAM,
        EigenGradCAM,
        GradCAM,
        GradCAMElementWise,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        XGradCAM,
    )

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
            "eigencam": EigenCAM, "eigengradcam": EigenGradCAM, "hirescam": HiResCAM,
            "gradcamelementwise": GradCAMElementWise}


PYTORCH_GRADCAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam", "eigengradcam",
                           "hirescam", "gradcamelementwise")
METHODS = (CROSS_ATTENTION, *PYTORCH_GRADCAM_METHODS)


@dataclass
class GradcamConfig:
    """Config section ``gradcam:``.

    split:         which samples ``make gradcam`` explains (train, test, labeled, unlabeled).
    method:        ``cross_attention`` or a pytorch-grad-cam method (see ``METHODS``).
    layer:         text-encoder layer (cross_attention) or ViT layer (pytorch-grad-cam); negative = from the end.
    target:        ``prob`` (GCDR) | ``logprob`` | ``logit`` of the key-noun token.
    batch_size:    persons per forward/backward.
    previews:      PNG overlays for the first N persons (-1 = all, 0 = none).
    query:         cross_attention: question positions averaged (``mean``) or [CLS] only (``cls``).
    subtoken:      which sub-token of the key noun is explained: ``last`` (default) or ``first``.
    tagger:        key-noun POS tagger: ``auto`` | ``spacy`` | ``lexical`` (see gcdr.vqa.keynoun).
    vision_module: pytorch-grad-cam target inside the ViT block: ``layer_norm1`` | ``output``.
    """

    split: str = "unlabeled"
    method: str = CROSS_ATTENTION
    layer: int = -2
    target: str = "prob"
    batch_size: int = 16
    previews: int = 50
    query: str = "mean"
    subtoken: str = "last"
    tagger: str = "auto"
    vision_module: str = "layer_norm1"

    def __post_init__(self) -> None:
        checks = {"method": (self.method, METHODS), "target": (self.target, TARGETS),
                  "query": (self.query, QUERIES), "vision_module": (self.vision_module, VISION_MODULES),
                  "subtoken": (self.subtoken, ("last", "first")), "tagger": (self.tagger, ("auto", "spacy", "lexical"))}
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"gradcam.{name} = {value!r}; choose one of {list(allowed)}")
        if self.batch_size < 1:
            raise ValueError(f"gradcam.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class CamResult:
    """One person's Grad-CAM.

    answer:    the generated answer ("" when the model said nothing).
    key_noun:  the explained word ("" when none).
    key_token: the explained sub-token as the tokenizer writes it (e.g. "##board").
    raw_map:   [h, w] float32 raw map on the ViT patch grid, or None without an answer.
    score:     the target value (probability / log-prob / logit) of the key token, NaN without an answer.
    """

    answer: str
    key_noun: str
    key_token: str
    raw_map: np.ndarray | None
    score: float


def target_scores(logits: torch.Tensor, steps: torch.Tensor, target_ids: torch.Tensor, kind: str) -> torch.Tensor:
    """Score of token ``target_ids[b]`` at decoder position ``steps[b]``: logits [B, T, V] -> [B] (float32)."""
    rows = torch.arange(len(steps), device=logits.device)
    step_logits = logits[rows, steps].float()  # [B, V]
    if kind == "prob":
        return step_logits.softmax(-1)[rows, target_ids]
    if kind == "logprob":
        return step_logits.log_softmax(-1)[rows, target_ids]
    if kind == "logit":
        return step_logits[rows, target_ids]
    raise ValueError(f"unknown target {kind!r}; use one of {TARGETS}")


@dataclass
class _TeacherForcing:
    """Decoder inputs of a batch: [BOS] + answer tokens, right-padded, and where to read the score."""

    decoder_ids: torch.Tensor  # [B, T]
    decoder_mask: torch.Tensor  # [B, T]
    steps: torch.Tensor  # [B] decoder position whose logits predict the key token
    target_ids: torch.Tensor  # [B]

    @classmethod
    def build(cls, tokens: list[AnswerTokens], bos_id: int, pad_id: int, device: torch.device) -> _TeacherForcing:
        length = 1 + max(len(t.token_ids) for t in tokens)
        ids = torch.full((len(tokens), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(tokens), length), dtype=torch.long)
        for row, t in enumerate(tokens):
            ids[row, : 1 + len(t.token_ids)] = torch.tensor([bos_id, *t.token_ids])
            mask[row, : 1 + len(t.token_ids)] = 1
        steps = torch.tensor([t.step for t in tokens])  # logits at position step predict token_ids[step]
        targets = torch.tensor([t.token_ids[t.step] for t in tokens])
        return cls(ids.to(device), mask.to(device), steps.to(device), targets.to(device))


@contextlib.contextmanager
def _capture_output(module: nn.Module, index: int | None = None) -> Iterator[list[torch.Tensor]]:
    """Record ``module``'s output (element ``index`` of a tuple output) during the ``with`` block."""
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(output if index is None else output[index])

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _resolve_layer(layers: nn.ModuleList, layer: int, what: str) -> nn.Module:
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"gradcam.layer = {layer} but the {what} has {len(layers)} layers")
    return layers[layer]


def vit_tokens_to_grid(grid_hw: tuple[int, int]):
    """reshape_transform for pytorch-grad-cam: ViT tokens [B, 1 + h*w, D] -> [B, D, h, w] (drops [CLS])."""
    height, width = grid_hw

    def transform(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:, :]  # [B, h*w, D]
        return patches.reshape(patches.shape[0], height, width, patches.shape[-1]).permute(0, 3, 1, 2)

    return transform


class _ScoreModel(nn.Module):
    """BLIP VQA as a function of the pixels only, returning the key-token score [B, 1] (for pytorch-grad-cam).

    The question and the teacher-forced answer of the current batch are set with ``set_batch``.
    """

    def __init__(self, vqa: Vqa, kind: str):
        super().__init__()
        self.vqa = vqa
        self.net = vqa.model  # registered so that pytorch-grad-cam finds the device through .parameters()
        self.kind = kind
        self.batch: tuple[torch.Tensor, torch.Tensor, _TeacherForcing] | None = None

    def set_batch(self, question_ids: torch.Tensor, question_mask: torch.Tensor, forcing: _TeacherForcing) -> None:
        self.batch = (question_ids, question_mask, forcing)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        question_ids, question_mask, forcing = self.batch
        image_embeds = image_embeddings(self.vqa, pixel_values)
        question_embeds = question_embeddings(self.vqa, image_embeds, question_ids, question_mask)
        logits = answer_logits(self.vqa, question_embeds, question_mask, forcing.decoder_ids, forcing.decoder_mask)
        return target_scores(logits, forcing.steps, forcing.target_ids, self.kind)[:, None]  # [B, 1]


class VqaGradcam:
    """Answers + Grad-CAM maps for batches of person prompts with one VQA model.

    ``explain(prompts)`` -> one ``CamResult`` per prompt. The batch is processed with one generation, one
    forward and one backward; call it with one prompt at a time for the per-person reference path.
    """

    def __init__(self, vqa: Vqa, cam_cfg: GradcamConfig, vqa_cfg: VqaConfig | None = None):
        self.vqa = vqa
        self.cfg = cam_cfg
        self.vqa_cfg = vqa_cfg or VqaConfig()
        self.grid_hw = vqa.patch_grid_hw
        if cam_cfg.method == CROSS_ATTENTION:
            self.text_layer = _resolve_layer(vqa.model.text_encoder.encoder.layer, cam_cfg.layer, "text encoder")
            if not hasattr(self.text_layer, "crossattention"):
                raise ValueError("the text encoder has no cross-attention (config.text_config.is_decoder is False)")
        else:
            if cam_cfg.vision_module == "embeddings":  # patch + position embeddings, before any ViT layer
                self.vision_target = vqa.model.vision_model.embeddings
            else:
                block = _resolve_layer(vqa.model.vision_model.encoder.layers, cam_cfg.layer, "vision encoder")
                self.vision_target = block.layer_norm1 if cam_cfg.vision_module == "layer_norm1" else block
            self.cam_class = _pytorch_gradcam_classes()[cam_cfg.method]
            self.score_model = _ScoreModel(vqa, cam_cfg.target)

    def explain(self, prompts: list[PersonPrompt]) -> list[CamResult]:
        """Answer and explain each prompt; see ``CamResult`` (raw maps are [h, w] on the ViT patch grid).

        Prompts are grouped by question length and each group runs without padding: transformers 5.x BLIP
        drops the cross-attention mask (``BlipTextAttention`` does not pass ``encoder_attention_mask`` on), so
        a padded question would change the answer decoder's input. In practice all persons share one question.
        """
        groups: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            length = len(self.vqa.tokenizer(prompt.question)["input_ids"])
            groups.setdefault(length, []).append(i)
        results: list[CamResult | None] = [None] * len(prompts)
        for members in groups.values():
            for i, result in zip(members, self._explain_same_length([prompts[i] for i in members])):
                results[i] = result
        return results

    def _explain_same_length(self, prompts: list[PersonPrompt]) -> list[CamResult]:
        tokenizer = self.vqa.tokenizer
        pixel_values = encode_images(self.vqa, [p.image_rgb for p in prompts])  # [B, 3, S, S]
        question_ids, question_mask = encode_questions(self.vqa, [p.question for p in prompts])  # [B, Lq]
        with torch.no_grad():
            image_embeds = image_embeddings(self.vqa, pixel_values)  # [B, 1 + h*w, Dv], reused by the CAM
        answers = generate_answers(self.vqa, None, question_ids, question_mask, self.vqa_cfg.max_answer_tokens,
                                   self.vqa_cfg.num_beams, image_embeds=image_embeds)
        tokens = [answer_tokens(a, tokenizer, self.cfg.subtoken, self.cfg.tagger) if a else None for a in answers]
        results = [CamResult(a, t.key_noun if t else "", tokenizer.convert_ids_to_tokens(t.token_ids[t.step]) if t
                             else "", None, float("nan")) for a, t in zip(answers, tokens)]
        rows = [i for i, t in enumerate(tokens) if t is not None]
        if not rows:
            return results
        text_config = self.vqa.model.config.text_config
        forcing = _TeacherForcing.build([tokens[i] for i in rows], text_config.bos_token_id,
                                        text_config.pad_token_id, self.vqa.device)
        index = torch.tensor(rows, device=self.vqa.device)
        if self.cfg.method == CROSS_ATTENTION:
            raw_maps, scores = self._cross_attention(image_embeds[index], question_ids[index],
                                                     question_mask[index], forcing)
        else:
            raw_maps, scores = self._pytorch_gradcam(pixel_values[index], question_ids[index],
                                                     question_mask[index], forcing)
        for k, row in enumerate(rows):
            results[row].raw_map = raw_maps[k]
            results[row].score = float(scores[k])
        return results

    def _cross_attention(self, image_embeds, question_ids, question_mask, forcing):
        # a leaf that requires grad: autograd then builds the graph of the text networks only
        image_embeds = image_embeds.detach().requires_grad_(True)  # [B, 1 + h*w, Dv]
        with torch.enable_grad(), _capture_output(self.text_layer.crossattention.self, index=1) as captured:
            question_embeds = question_embeddings(self.vqa, image_embeds, question_ids, question_mask)
            logits = answer_logits(self.vqa, question_embeds, question_mask, forcing.decoder_ids,
                                   forcing.decoder_mask)  # [B, T, V]
            scores = target_scores(logits, forcing.steps, forcing.target_ids, self.cfg.target)  # [B]
            attention = captured[0]  # [B, heads, Lq, 1 + h*w]
            (gradient,) = torch.autograd.grad(scores.sum(), attention)
        cam = (gradient.float() * attention.detach().float()).clamp_min(0)[..., 1:].mean(1)  # [B, Lq, h*w]
        if self.cfg.query == "mean":
            weights = question_mask.float() / question_mask.sum(1, keepdim=True)  # [B, Lq]
        else:
            weights = torch.zeros_like(question_mask, dtype=torch.float)
            weights[:, 0] = 1.0
        cam = (cam * weights[:, :, None]).sum(1)  # [B, h*w]
        raw_maps = cam.reshape(len(cam), *self.grid_hw).cpu().numpy().astype(np.float32)
        return list(raw_maps), scores.detach().cpu().numpy()

    def _pytorch_gradcam(self, pixel_values, question_ids, question_mask, forcing):
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.score_model.set_batch(question_ids, question_mask, forcing)
        cam = self.cam_class(model=self.score_model, target_layers=[self.vision_target],
                             reshape_transform=vit_tokens_to_grid(self.grid_hw))
        pixel_values = pixel_values.detach().clone().requires_grad_(True)  # weights are frozen: graph via input
        try:
            with torch.enable_grad():
                scores = cam.activations_and_grads(pixel_values)  # [B, 1]
                if cam.uses_gradients:
                    scores.sum().backward()
            activations = cam.activations_and_grads.activations[0].float().numpy()  # [B, D, h, w]
            gradients = (cam.activations_and_grads.gradients[0].float().numpy() if cam.uses_gradients
                         else np.zeros_like(activations))
            targets = [ClassifierOutputTarget(0)] * len(pixel_values)
            raw = cam.get_cam_image(pixel_values, self.vision_target, targets, activations, gradients, False)
        finally:
            cam.activations_and_grads.release()
        raw_maps = np.maximum(np.asarray(raw, np.float32), 0)  # [B, h, w]
        return list(raw_maps), scores.detach()[:, 0].cpu().numpy()
