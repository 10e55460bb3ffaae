"""Student checkpoints in the ecosystem's formats: writing them (``make export``) and reading them
(:func:`gcdr.students.training.load_student`). docs/official-code.md#gaze-lle-decoder-checkpoint-keys,
#vat-weight-files-and-loading.

- Gaze-LLE (``fkryan/gazelle``, the ``gazelle_dinov2_vitb14.pt`` layout): a plain dict of tensors holding
  every state-dict key outside ``backbone.*`` (``pos_embed`` included). gazelle's ``load_gazelle_state_dict``
  compares the model's and the file's key sets with ``backbone*`` ignored on both sides, prints a warning for
  keys on one side only, copies the intersection and calls ``load_state_dict(strict=False)`` (a shape
  mismatch still raises). An exported file holds exactly the keys of gazelle's ``GazeLLE(backbone,
  inout, dim, num_layers, in_size)``, so it loads without a warning. gazelle's blocks always have 8 heads.
- VAT (``ejcgt/attention-target-detection``, the ``model_gazefollow.pt`` layout): ``{"model": state_dict}``
  with ``ModelSpatial``'s flat keys. VAT's scripts update the model's state dict with the file's entries and
  load strictly, so every file key must be a ``ModelSpatial`` key of the same shape (ResNet-50, 224 px).

Reading: an official file's size is inferred from its shapes (Gaze-LLE: dim, layers, in/out, backbone width,
token grid; VAT: pathway type, width, input size); a Gaze-LLE file needs a backbone (hub id / directory).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gcdr.atomic import atomic_path
from gcdr.checkpoints import load_torch_file
from gcdr.students.gazelle import (
    GAZELLE_INPUT_SIZE,
    OFFICIAL_NUM_HEADS,
    GazeLLE,
    decoder_size_from_state_dict,
    load_backbone,
)
from gcdr.students.vat import VAT_INPUT_SIZE, VATSpatial, read_state_dict, vat_size_from_state_dict

log = logging.getLogger(__name__)

FORMATS = ("official",)
DEFAULT_GAZELLE_BACKBONE = "facebook/dinov2-base"  # ViT-B/14: gazelle_dinov2_vitb14*.pt
DINOV2_BY_WIDTH = {384: "facebook/dinov2-small", 768: "facebook/dinov2-base", 1024: "facebook/dinov2-large",
                   1536: "facebook/dinov2-giant"}
OFFICIAL_GAZELLE = {"dim": 256, "num_layers": 3, "input_size": GAZELLE_INPUT_SIZE}  # released decoders
OFFICIAL_VAT = {"backbone": "resnet50", "width": 64, "input_size": VAT_INPUT_SIZE}  # VAT's ModelSpatial


# ------------------------------------------------------------------------------------------- writing

def official_payload(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What an official file holds for a student of gcdr ``config`` (a model config) with state ``state``.

    Gaze-LLE: the plain decoder state (``backbone.*`` dropped); VAT: ``{"model": state}``. Raises when the
    student cannot be expressed in the format (Gaze-LLE with other than 8 heads; VAT on the resnet18 stand-in,
    whose keys differ); warns when it can but the released code's fixed sizes differ.
    """
    state = {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}
    if config["model"] == "gazelle":
        heads = config.get("num_heads", OFFICIAL_NUM_HEADS)
        if heads != OFFICIAL_NUM_HEADS:
            raise ValueError(f"gazelle's GazeLLE has {OFFICIAL_NUM_HEADS} attention heads and its files do not "
                             f"store the number; this student has {heads}: an official-format file would be misread")
        decoder = {k: v for k, v in state.items() if not k.startswith("backbone")}
        size = decoder_size_from_state_dict(decoder)
        actual = {"dim": size["dim"], "num_layers": size["num_layers"], "input_size": config.get("input_size")}
        if actual != OFFICIAL_GAZELLE or size["feature_dim"] not in (768, 1024):
            log.warning("Gaze-LLE sizes %s on a %d-wide backbone differ from the released models (%s on DINOv2 "
                        "ViT-B/L): gazelle reads the file into GazeLLE(dim=%d, num_layers=%d) on such a backbone",
                        actual, size["feature_dim"], OFFICIAL_GAZELLE, size["dim"], size["num_layers"])
        return decoder
    if config["model"] == "vat":
        if config.get("backbone") != "resnet50":
            raise ValueError(f"VAT's ModelSpatial is a ResNet-50 network; the {config.get('backbone')!r} stand-in "
                             "has other state-dict keys")
        size = vat_size_from_state_dict(state)
        if size != OFFICIAL_VAT:
            log.warning("VAT sizes %s differ from ModelSpatial's %s: the keys are VAT's, the shapes are not "
                        "(VAT's scripts will not load it; gcdr's load_student will)", size, OFFICIAL_VAT)
        return {"model": state}
    raise ValueError(f"unknown student model {config['model']!r}")


def export_official(ckpt: str | Path, out: str | Path) -> str:
    """Write the gcdr student checkpoint ``ckpt`` (last.pt of train-student) as an official file ``out``.

    Reads only the stored state and model config (no backbone is loaded). Returns the model (vat | gazelle).
    """
    checkpoint = load_torch_file(ckpt, map_location="cpu", weights_only=False,
                                 hint="delete it and rerun train-student")
    if not isinstance(checkpoint, Mapping) or "model_config" not in checkpoint:
        raise ValueError(f"{ckpt}: not a gcdr student checkpoint (no model_config)")
    payload = official_payload(checkpoint["model_config"], checkpoint["state_dict"])
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    model = checkpoint["model_config"]["model"]
    log.info("wrote %s (%s, official layout, %d tensors)", out, model,
             len(payload["model"] if model == "vat" else payload))
    return model


# ------------------------------------------------------------------------------------------- reading

def official_kind(checkpoint: Any) -> str | None:
    """"gazelle" / "vat" when a loaded file is an official Gaze-LLE decoder / VAT ModelSpatial file, else None.

    Accepts the wrappers ``{'model': sd}`` / ``{'state_dict': sd}`` and ``module.`` prefixes (as the loaders do).
    """
    if not isinstance(checkpoint, Mapping) or "model_config" in checkpoint:
        return None
    state = read_state_dict(checkpoint)
    if "head_token.weight" in state and "linear.weight" in state:
        return "gazelle"
    if "conv1_scene.weight" in state and "conv4.weight" in state:
        return "vat"
    return None


def official_student(checkpoint: Mapping, backbone: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build and load a student from an official file's content; returns (model in eval mode, model config).

    Gaze-LLE: sizes from the shapes, 8 heads, input size = token grid x the backbone's patch size (448 for
    the released ViT-B/14 and ViT-L/14 files); ``backbone`` None = the DINOv2 of the file's feature width
    (768: facebook/dinov2-base). VAT: :func:`vat_size_from_state_dict`. Every file key must be used and every
    model key be present (except Gaze-LLE's deterministic ``pos_embed`` and BN ``num_batches_tracked``).
    """
    kind = official_kind(checkpoint)
    state = read_state_dict(checkpoint)
    if kind == "gazelle":
        size = decoder_size_from_state_dict(state)
        name = str(backbone) if backbone is not None else DINOV2_BY_WIDTH.get(size["feature_dim"],
                                                                              DEFAULT_GAZELLE_BACKBONE)
        module = load_backbone(name)
        if module.hidden_size != size["feature_dim"]:
            hint = f" (e.g. {DINOV2_BY_WIDTH[size['feature_dim']]})" if size["feature_dim"] in DINOV2_BY_WIDTH else ""
            raise ValueError(f"the Gaze-LLE decoder takes {size['feature_dim']}-d features but backbone {name} gives "
                             f"{module.hidden_size}: set student.gazelle_backbone to a matching model{hint}")
        grid = size["grid"] or GAZELLE_INPUT_SIZE // module.patch_size
        config = {"model": "gazelle", "backbone": name, "inout": size["inout"], "input_size": grid * module.patch_size,
                  "dim": size["dim"], "num_layers": size["num_layers"], "num_heads": OFFICIAL_NUM_HEADS}
        model = GazeLLE(module, inout=config["inout"], input_size=config["input_size"], dim=config["dim"],
                        num_layers=config["num_layers"], num_heads=OFFICIAL_NUM_HEADS)
        report = model.load_decoder_state_dict(state)
        missing, unexpected = [k for k in report.missing if k != "pos_embed"], report.unexpected
    elif kind == "vat":
        size = vat_size_from_state_dict(state)
        config = {"model": "vat", **size, "zero_init_output": False}
        model = VATSpatial(size["backbone"], width=size["width"], input_size=size["input_size"])
        result = model.load_state_dict(state, strict=False)  # a shape mismatch raises
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        unexpected = list(result.unexpected_keys)
    else:
        raise ValueError("neither an official Gaze-LLE decoder file nor a VAT {'model': ModelSpatial state} file")
    if missing or unexpected:
        raise ValueError(f"official {kind} file: missing {missing}, unexpected {unexpected}")
    log.info("official %s file read as %s", kind, config)
    return model.eval(), config
