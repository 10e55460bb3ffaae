"""The VQA model of stage 1: a transformers BLIP (``BlipForQuestionAnswering`` + ``BlipProcessor``).

BLIP VQA is three networks in a row (transformers' names):
  ``vision_model``  ViT over the image -> image tokens [B, 1 + h*w, Dv] (token 0 is the image [CLS])
  ``text_encoder``  BERT over the question, cross-attending to the image tokens -> question encoding [B, Lq, D]
  ``text_decoder``  causal BERT producing the answer, cross-attending to the question encoding (not to the image)

``load_vqa`` loads a pretrained model from the hub (``Salesforce/blip-vqa-base``, ``Salesforce/blip-vqa-capfilt-large``)
or from a local ``save_pretrained`` directory (``make synth-vqa`` writes one), honouring ``HF_HUB_OFFLINE``.
``build_blip_from_scratch`` makes a small, randomly initialised BLIP with a word-level tokenizer (SynthGaze VQA,
tests). ``encode_questions`` / ``generate_answers`` / ``question_embeddings`` / ``answer_logits`` are the pieces
of the VQA forward pass that Grad-CAM needs (``BlipForQuestionAnswering.forward`` returns no answer logits).

Padding caveat (transformers 5.x): ``BlipTextAttention`` does not pass the cross-attention mask on, so the
answer decoder attends to the padding of a padded question batch. Callers batch questions of equal token length
(``gcdr.vqa.gradcam.VqaGradcam.explain`` groups them); answers may be right-padded (the decoder is causal).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForQuestionAnswering,
    BlipImageProcessor,
    BlipProcessor,
)

from gcdr.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_HUB_MODEL = "Salesforce/blip-vqa-base"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # [DEC] = BLIP's answer BOS


@dataclass
class VqaConfig:
    """Config section ``vqa:`` (stage-1 model and prompt).

    model:              hub id (e.g. Salesforce/blip-vqa-base) or a local save_pretrained directory.
    question:           question asked about a person whose box is drawn in green.
    fallback_question:  question for an unmarked image (only with ``mark: body_only`` and no body box, as GCDR).
    half_precision:     run the model in float16 on a GPU (ignored on CPU).
    mark:               which box is drawn: ``body_or_head`` (body box if the sample has one, else the head box)
                        or ``body_only`` (GCDR: the body box, else no box and the fallback question).
    device:             ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1`` ...
    max_answer_tokens:  generation length limit (new tokens).
    num_beams:          beam width of answer generation (1 = greedy; GCDR/OFA used 100).
    """

    model: str = "data/synth_vqa"
    question: str = "what is the person in the green bounding box looking at?"
    fallback_question: str = "what is the person looking at?"
    half_precision: bool = False
    mark: str = "body_or_head"
    device: str = "auto"
    max_answer_tokens: int = 20
    num_beams: int = 1


@dataclass
class Vqa:
    """A loaded VQA model: eval mode, parameters frozen, on ``device`` in ``dtype``."""

    model: BlipForQuestionAnswering
    processor: BlipProcessor
    device: torch.device
    dtype: torch.dtype
    model_id: str

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def patch_grid_hw(self) -> tuple[int, int]:
        """(h, w) of the ViT patch grid, e.g. (24, 24) for 384 px images and 16 px patches."""
        vision = self.model.config.vision_config
        size = vision.image_size if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
        patch = vision.patch_size if isinstance(vision.patch_size, (list, tuple)) else (vision.patch_size,) * 2
        return size[0] // patch[0], size[1] // patch[1]


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


class VqaLoadError(UserError, OSError):
    """The VQA model cannot be loaded; the message says what to run or set."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_vqa(model: str, device: str | torch.device = "auto", half_precision: bool = False) -> Vqa:
    """Load BLIP VQA + processor from a hub id or a local directory.

    model:          hub id or directory written by ``save_pretrained`` (model and processor).
    device:         ``auto`` / torch device string / torch.device.
    half_precision: float16 weights when the device is a GPU (CPU always runs float32).
    With ``HF_HUB_OFFLINE=1`` nothing is downloaded: a hub id must already be in the local cache.
    """
    device = device if isinstance(device, torch.device) else pick_device(device)
    local = Path(model).is_dir()
    if not local and (Path(model).exists() or model.startswith((".", "/")) or model.count("/") != 1):
        raise VqaLoadError(f"VQA model folder {model} does not exist: run `make synth-vqa` for the offline SynthGaze "
                           "stand-in, or set VQA=<hub id, e.g. Salesforce/blip-vqa-base> / VQA=<a saved model folder>")
    kwargs = {"local_files_only": True} if (_offline() and not local) else {}
    try:
        processor = BlipProcessor.from_pretrained(model, **kwargs)
        net = BlipForQuestionAnswering.from_pretrained(model, **kwargs)
    except OSError as error:
        if kwargs:
            raise VqaLoadError(f"VQA model {model} is neither a folder here nor in the local Hugging Face cache "
                               f"(HF_HUB_OFFLINE=1): for the offline SynthGaze stand-in run `make synth-vqa`; for a "
                               f"hub model download it once with HF_HUB_OFFLINE=0 (make gradcam HF_HUB_OFFLINE=0 "
                               f"...), or copy it to a folder and set VQA=<folder>") from error
        if local:
            raise VqaLoadError(f"VQA model folder {model} cannot be loaded ({_first_line(error)}); it must hold a "
                               "BLIP VQA model and processor saved with save_pretrained (make synth-vqa writes one)"
                               ) from error
        raise VqaLoadError(f"cannot download VQA model {model} ({_first_line(error)}); check the hub id and the "
                           "network, or set VQA=<a saved model folder>") from error
    dtype = torch.float16 if (half_precision and device.type == "cuda") else torch.float32
    net = net.to(device=device, dtype=dtype).eval()
    net.requires_grad_(False)  # Grad-CAM needs gradients w.r.t. activations only, never w.r.t. weights
    log.info("VQA model %s on %s (%s)", model, device, dtype)
    return Vqa(model=net, processor=processor, device=device, dtype=dtype, model_id=model)


def as_vqa(model: BlipForQuestionAnswering, processor: BlipProcessor, device: str | torch.device = "auto",
           model_id: str = "(in memory)") -> Vqa:
    """Wrap an in-memory model (e.g. from ``build_blip_from_scratch``) like ``load_vqa`` does (float32, eval)."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    model = model.to(device=device, dtype=torch.float32).eval()
    model.requires_grad_(False)
    return Vqa(model=model, processor=processor, device=device, dtype=torch.float32, model_id=model_id)


def build_processor(words: list[str], image_size: int = 96) -> BlipProcessor:
    """A BLIP processor with a word-level BERT tokenizer and a ``image_size`` square image processor.

    words: vocabulary (whole words, lower-cased; punctuation marks as separate words). Special tokens come first:
    [PAD]=0, [UNK], [CLS], [SEP], [MASK], [DEC] (BLIP's answer BOS).
    """
    vocab_words = list(dict.fromkeys(SPECIAL_TOKENS + [w.lower() for w in words]))
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab_words)}, bos_token="[DEC]",
                              model_max_length=64)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_blip_from_scratch(words: list[str], image_size: int = 96, patch_size: int = 16,
                            hidden_size: int = 128, vision_layers: int = 4, text_layers: int = 2,
                            heads: int = 4, seed: int = 0) -> tuple[BlipForQuestionAnswering, BlipProcessor]:
    """A small randomly initialised BLIP VQA model with a word-level tokenizer (``build_processor``).

    image_size: square input size in pixels; patch_size: ViT patch (grid = image_size // patch_size);
    vision_layers may be 0 (image tokens = patch + position embeddings).
    Returns (model, processor); ``save_pretrained`` both into one directory to load with ``load_vqa``.
    """
    processor = build_processor(words, image_size)
    tokenizer = processor.tokenizer
    text_config = dict(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=text_layers, num_attention_heads=heads, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
    )
    vision_config = dict(
        hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=vision_layers,
        num_attention_heads=heads, image_size=image_size, patch_size=patch_size, initializer_range=0.02,
    )
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text_config, vision_config=vision_config))
    return model, processor


def encode_images(vqa: Vqa, images_rgb: list[np.ndarray]) -> torch.Tensor:
    """Resize + normalise RGB uint8 images [H, W, 3] with the processor -> pixel_values [B, 3, S, S]."""
    pixels = vqa.processor.image_processor(images=images_rgb, return_tensors="pt")["pixel_values"]
    return pixels.to(device=vqa.device, dtype=vqa.dtype)


def encode_questions(vqa: Vqa, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise questions ([CLS] q [SEP], right-padded) -> (input_ids [B, Lq], attention_mask [B, Lq])."""
    tokens = vqa.tokenizer(questions, padding=True, return_tensors="pt")
    return tokens["input_ids"].to(vqa.device), tokens["attention_mask"].to(vqa.device)


def image_embeddings(vqa: Vqa, pixel_values: torch.Tensor) -> torch.Tensor:
    """ViT image tokens [B, 1 + h*w, Dv] (after the post layer norm, as BLIP feeds the text encoder)."""
    return vqa.model.vision_model(pixel_values=pixel_values).last_hidden_state


def question_embeddings(vqa: Vqa, image_embeds: torch.Tensor, question_ids: torch.Tensor,
                        question_mask: torch.Tensor) -> torch.Tensor:
    """Text encoder over the question, cross-attending to all image tokens -> [B, Lq, D]."""
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    return vqa.model.text_encoder(input_ids=question_ids, attention_mask=question_mask,
                                  encoder_hidden_states=image_embeds,
                                  encoder_attention_mask=image_mask).last_hidden_state


def answer_logits(vqa: Vqa, question_embeds: torch.Tensor, question_mask: torch.Tensor,
                  decoder_ids: torch.Tensor, decoder_mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced answer decoder: logits [B, T, V]; position t predicts decoder token t + 1."""
    return vqa.model.text_decoder(input_ids=decoder_ids, attention_mask=decoder_mask,
                                  encoder_hidden_states=question_embeds,
                                  encoder_attention_mask=question_mask).logits


@torch.no_grad()
def generate_answers(vqa: Vqa, pixel_values: torch.Tensor | None, question_ids: torch.Tensor,
                     question_mask: torch.Tensor, max_new_tokens: int = 20, num_beams: int = 1,
                     image_embeds: torch.Tensor | None = None) -> list[str]:
    """Answer each question about its image; returns the decoded answers (special tokens removed).

    Give ``pixel_values`` [B, 3, S, S] or already computed ``image_embeds`` [B, 1 + h*w, Dv].

    Deterministic (greedy or beam search). Give questions of equal token length (see the padding caveat in
    the module docstring); each row then depends only on its own inputs.
    """
    if image_embeds is None:
        image_embeds = image_embeddings(vqa, pixel_values)
    question_embeds = question_embeddings(vqa, image_embeds, question_ids, question_mask)
    text_config = vqa.model.config.text_config
    bos = torch.full((len(question_ids), 1), text_config.bos_token_id, dtype=torch.long, device=vqa.device)
    output_ids = vqa.model.text_decoder.generate(
        input_ids=bos, encoder_hidden_states=question_embeds, encoder_attention_mask=question_mask,
        eos_token_id=text_config.sep_token_id, pad_token_id=text_config.pad_token_id,
        max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
    )
    return [text.strip() for text in vqa.tokenizer.batch_decode(output_ids, skip_special_tokens=True)]
