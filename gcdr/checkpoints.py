"""Loading weight files with errors that name the file and say what to do.

``torch.load`` on a truncated, empty or foreign file fails with messages such as "PytorchStreamReader failed
reading zip archive", "Ran out of input" or a bare ``KeyError`` that do not name the file; safetensors says
"incomplete metadata". :func:`load_torch_file` and :func:`load_safetensors_file` turn any such failure into one
:class:`CheckpointError` line: the path, what is wrong with it (empty, truncated, not a PyTorch / safetensors
file, or the loader's own error when the file itself looks intact) and what to do (``hint``). A missing file
still raises ``FileNotFoundError`` (it already names the path).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from gcdr.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_HINT = "delete it and rerun the stage that wrote it"


class CheckpointError(UserError, RuntimeError):
    """A weight file that cannot be loaded; the message names the path and what to do."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _diagnose_torch(path: Path) -> str | None:
    """What is wrong with the file itself, or None when it looks intact (the failure lies elsewhere)."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # the zip format of torch.save
        if not zipfile.is_zipfile(path):
            return f"is truncated ({size} bytes, an incomplete zip archive)"
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f"is damaged ({_first_line(error)})"
        return f"is damaged (bad CRC in {bad})" if bad else None
    if head[:1] == b"\x80":  # a pickle: the legacy (pre-1.6) torch.save format
        return f"is truncated or damaged ({size} bytes, legacy PyTorch format)"
    return f"is not a PyTorch file (starts with {head!r})"


def load_torch_file(f: str | os.PathLike, *args: Any, hint: str = DEFAULT_HINT, **kwargs: Any) -> Any:
    """``torch.load(f, *args, **kwargs)``; any failure becomes one :class:`CheckpointError` naming ``f``.

    ``hint``: what the user should do about a damaged file, e.g. "delete it and rerun train-student".
    """
    try:
        return torch.load(f, *args, **kwargs)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:
        if not isinstance(f, (str, os.PathLike)):
            raise CheckpointError(f"{f!r}: could not be loaded ({_first_line(error)})") from error
        path = Path(f)
        problem = _diagnose_torch(path)
        if problem is None:
            raise CheckpointError(f"{path}: could not be loaded although the file looks intact "
                                  f"({_first_line(error)})") from error
        raise CheckpointError(f"{path} {problem}; {hint}") from error


def _diagnose_safetensors(path: Path) -> str | None:
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return f"is truncated ({size} bytes, no complete header)"
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > 100_000_000:
            return "is not a safetensors file (no valid header)"
        if 8 + header_len > size:
            return f"is truncated ({size} bytes, the header alone needs {8 + header_len})"
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "is not a safetensors file (the header is not JSON)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        return "is not a safetensors file (unexpected header)"
    if 8 + header_len + end > size:
        return f"is truncated ({size} bytes, the header says {8 + header_len + end})"
    return None


def load_safetensors_file(path: str | os.PathLike, device: str | torch.device = "cpu",
                          hint: str = DEFAULT_HINT) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file(path, device)``; any failure becomes one :class:`CheckpointError`."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path), device=str(device))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}") from error
        problem = _diagnose_safetensors(path)
        if problem is None:
            raise CheckpointError(f"{path}: could not be loaded although the file looks intact "
                                  f"({_first_line(error)})") from error
        raise CheckpointError(f"{path} {problem}; {hint}") from error


def read_model_dir(directory: str | os.PathLike, what: str, hint: str, config_file: str = "config.json",
                   weights_file: str = "model.safetensors",
                   map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """The config (parsed JSON) and weights of a ``save_pretrained`` directory, and the config's path; a missing,
    damaged or unreadable file is an error naming it (``what``: "student", "teacher"; ``hint``: what to do)."""
    directory = Path(directory)
    config_path, weights_path = directory / config_file, directory / weights_file
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"not a {what} model directory (need {config_file} and {weights_file}): {directory}")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path} is damaged or not JSON ({error}); {hint}") from error
    return config, load_safetensors_file(weights_path, device=map_location, hint=hint), config_path


def weights_do_not_fit(config_path: Path, error: BaseException, hint: str) -> CheckpointError:
    """The error for weights whose names or shapes do not fit the model their config.json describes."""
    return CheckpointError(f"{config_path.parent / 'model.safetensors'} does not fit {config_path} "
                           f"({str(error).splitlines()[0]}); {hint}")


# ------------------------------------------------------------------------------------------ weight loading

class LoadReport(NamedTuple):
    """Keys copied, module keys left untouched (missing), file keys not used (unexpected / shape mismatch)."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]


def read_state_dict(path_or_state_dict: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a file or a mapping; unwraps ``{'model': sd}`` / ``{'state_dict': sd}``, strips ``module.``."""
    if isinstance(path_or_state_dict, (str, Path)):
        state = load_torch_file(path_or_state_dict, map_location="cpu", weights_only=True,
                                hint="download or copy the weights file again")
    else:
        state = path_or_state_dict
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def load_vat_weights(module: nn.Module, path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
                     prefix: str = "") -> LoadReport:
    """Copy every entry whose name (``prefix`` + file key) and shape match ``module``'s state dict (GCDR-style).

    Accepts a file path or a mapping, wrapped as ``{'model': sd}`` (VAT) or ``{'state_dict': sd}`` (GCDR),
    with or without ``module.`` prefixes. ``prefix``: where the VAT keys live inside ``module``
    (e.g. ``"feat_extractor."`` for the diffusion teacher). Returns a :class:`LoadReport`; ``missing``
    lists module keys under ``prefix`` that were not loaded, ``unexpected`` the file keys not used
    (absent or of another shape; shape mismatches are logged with both shapes).
    """
    source = read_state_dict(path_or_state_dict)
    target = module.state_dict()
    loaded, unexpected = [], []
    with torch.no_grad():
        for key, value in source.items():
            name = prefix + key
            if name in target and target[name].shape == value.shape:
                target[name].copy_(value.to(target[name].dtype))
                loaded.append(name)
            else:
                if name in target:
                    log.warning("shape mismatch for %s: file %s, model %s", name, tuple(value.shape),
                                tuple(target[name].shape))
                unexpected.append(key)
    loaded_set = set(loaded)
    missing = [k for k in target if k.startswith(prefix) and k not in loaded_set]
    log.info("VAT weights: %d loaded, %d missing, %d unexpected", len(loaded), len(missing), len(unexpected))
    return LoadReport(loaded, missing, unexpected)
