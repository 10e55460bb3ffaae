"""The student interface: what training, evaluation, prediction, export and the bench know of a student.

A student is an ``nn.Module`` that wraps its network (``self.model``: VATSpatial, GazeLLE, ...) and says

    config_class        its model config dataclass (what ``config.json`` holds, plus ``"model": name``)
    config_from(s, out_root)   that config from the flat ``student:`` section (gcdr.students.config)
    input_maps(s, *also)  optional: per-person maps the student reads as an input (VAT-GC's Grad-CAM), default none
    parameter_groups(cfg), own_batches(...)   optional: the optimiser's parameter groups, and batches of its
                        own (clip students); the defaults keep every trainable parameter and person batches
    forward(batch, return_logits=False) -> (heatmap [B, 64, 64], in/out [B] or None)
                        on the batch dict of gcdr.data.dataset (one person per row); with
                        ``return_logits`` both before any final sigmoid (what :meth:`heatmap_loss` takes)
    heatmap_loss(logits, target_64, mask, weight, cfg)   its per-row masked heatmap loss (a staticmethod)
    trainable_state_dict() / load_trainable_state_dict(state)   its state without a frozen backbone
    save_pretrained(dir) / from_pretrained(dir)   ``config.json`` + ``model.safetensors``

and a few class attributes the training set-up reads instead of the student's name: ``style`` (the
GazeDataset input style), ``protocol`` (the metric protocol of ``eval_protocol: auto``), ``lr_schedule``
(what ``lr_schedule: auto`` means), ``lr_field`` (the ``student:`` field with its learning rate) and
``feature_cache`` (whether gcdr.students.feature_cache applies). Students are chosen by name in
gcdr.students.registry; nothing else looks at the name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn

from gcdr.atomic import atomic_path, write_json_atomic
from gcdr.checkpoints import LoadReport, read_model_dir, weights_do_not_fit

if TYPE_CHECKING:
    from gcdr.students.config import StudentConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class Student(nn.Module):
    """Base class of every student (see the module docstring). ``self.config``: its model config dataclass."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    style: ClassVar[str]
    protocol: ClassVar[str]
    lr_schedule: ClassVar[str]
    lr_field: ClassVar[str]
    feature_cache: ClassVar[bool] = False
    inout_is_logit: ClassVar[bool] = False
    reads_input_maps: ClassVar[bool] = False  # True: needs :meth:`input_maps` (e.g. VAT-GC's Grad-CAM input)  # True: forward's in/out is a logit (VAT); predictions apply the sigmoid

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------------------------- configs
    @classmethod
    def config_from(cls, student: StudentConfig, out_root: str | Path | None = None) -> Any:
        """The model config of the ``student:`` section (its ``vat_*`` / ``gazelle_*`` fields)."""
        raise NotImplementedError

    @classmethod
    def config_from_dict(cls, values: Mapping[str, Any]) -> Any:
        """The model config of a ``config.json`` / a checkpoint's ``model_config`` dict (``model`` dropped)."""
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(values) - fields - {"model"})
        if unknown:
            raise ValueError(f"{cls.name} model config has unknown keys {unknown}; known: {sorted(fields)}")
        return cls.config_class(**{k: v for k, v in values.items() if k != "model"})

    def model_config(self) -> dict[str, Any]:
        """``{"model": name, **config}``: a plain JSON-able dict that rebuilds the student (config.json)."""
        return {"model": self.name, **dataclasses.asdict(self.config)}

    @property
    def input_size(self) -> int:
        """Side of the square scene (and face / head channel) input, px."""
        return int(self.config.input_size)

    # ------------------------------------------------------------------------------ forward and loss
    def forward(self, batch: dict[str, torch.Tensor],
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def predict_images(self, batch: dict[str, torch.Tensor],
                       image_paths: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Evaluation outputs of a batch whose rows' images are ``image_paths`` (a student may share work
        between the persons of one image); the default is :meth:`forward`."""
        return self(batch)

    @staticmethod
    def loss_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B] bool: the rows that may carry a loss at all (None = every row the recipe's mask allows)."""
        return None

    @staticmethod
    def heatmap_loss(heatmap_logits: torch.Tensor, target_64: torch.Tensor, mask: torch.Tensor,
                     weight: torch.Tensor, cfg: StudentConfig) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------------- optimiser and batches
    def parameter_groups(self, cfg: StudentConfig) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
        """What the optimiser trains (Adam's first argument, at ``cfg.learning_rate`` unless a group says
        otherwise); the default: every parameter that requires a gradient, and with ``cfg.inout_lr`` those whose
        name contains "inout" in a group of their own at that rate (Gaze-LLE's VideoAttentionTarget recipe)."""
        trainable = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        if cfg.inout_lr is None:
            return [p for _, p in trainable]
        return [{"params": [p for name, p in trainable if "inout" not in name]},
                {"params": [p for name, p in trainable if "inout" in name], "lr": cfg.inout_lr}]

    def own_batches(self, dataset: Any, batch_size: int, train: bool = False,
                    cfg: StudentConfig | None = None) -> tuple[Any, Any] | None:
        """``(dataset, batch sampler)`` when the student batches a GazeDataset its own way (clip students:
        chunks of clips, gcdr.data.clips), else None: persons in batches of ``batch_size`` (the default)."""
        return None

    # ------------------------------------------------------------------------------ input maps
    @classmethod
    def input_maps(cls, student: StudentConfig, *also: Any) -> Any | None:
        """Per-person maps this student reads as an input, or None (the default: none).

        A folder-like object (``in``, ``heatmap_64(id)``, ``is_valid(id)``, e.g. gcdr.pseudolabels.
        PseudoLabelFolders) that every dataset the student reads (training, evaluation, refine's prediction)
        takes as its ``pseudo``: its maps reach the student as ``prior_heatmap_64`` / ``prior_valid``, cropped
        and flipped with the image. ``also``: folders the caller holds for these persons (refine: its source
        Grad-CAM folder), read after the configured ones."""
        return None

    # ---------------------------------------------------------------------------------- weights
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's state without a frozen backbone (the keys of the official files)."""
        return self.model.state_dict()

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict` strictly (every key, the same shapes)."""
        self.model.load_state_dict(state)

    def load_init_weights(self, path: str | Path) -> LoadReport:
        """Initial weights from a file (``student.init_weights``), as the student's recipe loads them."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (:meth:`model_config`) and ``model.safetensors`` (:meth:`trainable_state_dict`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.trainable_state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        write_json_atomic(directory / CONFIG_FILE, self.model_config())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Student:
        """Rebuild a student written by :meth:`save_pretrained` (in eval mode); errors name the directory.

        ``Student.from_pretrained`` builds whichever student ``config.json`` names; ``VATStudent.from_pretrained``
        also checks that it is that one."""
        from gcdr.students.registry import build_student

        hint = "delete the folder and export it again (python -m pipelines.export --format gcdr)"
        config, state, config_path = read_model_dir(directory, "student", hint, CONFIG_FILE, WEIGHTS_FILE,
                                                    str(map_location))
        student = build_student(config)
        if cls is not Student and not isinstance(student, cls):
            raise ValueError(f"{config_path} describes a {config.get('model')!r} student, not {cls.name!r}")
        try:
            student.load_trainable_state_dict(state)
        except (RuntimeError, ValueError) as error:
            raise weights_do_not_fit(config_path, error, hint) from error
        return student.eval()

    # ------------------------------------------------------------------------------- official files
    @classmethod
    def reads_official(cls, state: Mapping[str, torch.Tensor]) -> bool:
        """Whether a state dict is in this student's official release layout (see gcdr.students.export)."""
        return False

    @classmethod
    def official_payload(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> Any:
        """What this student's official file holds for a student of ``config`` with state ``state``."""
        raise ValueError(f"the {cls.name} student has no official file format")

    @classmethod
    def from_official(cls, state: Mapping[str, torch.Tensor], backbone: str | Path | None = None) -> Student:
        """A student sized from an official file's shapes, its state loaded (every key used)."""
        raise ValueError(f"the {cls.name} student has no official file format")
