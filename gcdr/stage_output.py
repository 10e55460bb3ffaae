"""One mechanism for every stage's output folder: claim it for one request, say whether it is done, refuse another.

A stage's output is defined by its *request*: the settings that change what it computes and the fingerprints of
its inputs (never a budget that may grow, never a path that only says where things are written). The first run
writes the request to ``<folder>/request.json``; every later run on the folder compares:

- same request: the stage resumes what is partly done (its own business: a pseudo-label writer skips the persons
  already written, a trainer starts from its checkpoint) or, when :meth:`StageOutput.done`, does nothing;
- another request: refused with one line that says what differs and the two ways out (another output folder,
  or ``--restart``, which empties the folder and starts over);
- a folder with files but no request (written by something else, or by gcdr before requests were recorded):
  refused the same way, so nothing is ever appended to output it cannot vouch for.

While the stage runs the folder is locked (gcdr.locking.folder_lock: a second job on it is refused, a killed
job's temporary files are removed). ``provenance.json`` records what produced the output (status "running",
then "done" with the stage's details); :meth:`done` is true once a run of this request wrote "done".

    with StageOutput(out_dir, "gradcam", request, config=cfg, restart=args.restart) as output:
        if output.done():
            return output.provenance()
        output.start(persons=len(samples))           # provenance: running
        ...                                          # write into out_dir, resuming what is there
        output.finish(summary=summary)               # provenance: done

In a multi-process run only the main process claims (``main_process=False`` on the others: no lock, no
checks, no writes); the others wait for it as they already do.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gcdr.atomic import write_json_atomic
from gcdr.errors import UserError
from gcdr.locking import LOCK_FILE, folder_lock
from gcdr.provenance import PROVENANCE_FILE, write_provenance

log = logging.getLogger(__name__)

REQUEST_FILE = "request.json"
DONE = "done"


class StageOutputError(UserError, RuntimeError):
    """The folder holds output of another request (or of unknown origin); the message is one line."""


def _canonical(value: Any) -> Any:
    """The request as JSON would give it back (tuples -> lists, paths -> str), so a reread compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _short(value: Any, width: int = 40) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


_ABSENT = object()


# Settings added after requests were first recorded, dotted, with the value that reproduces the older behaviour:
# a recorded request without the key matches a new one that holds exactly this value (so older output stays
# usable); any other value is a difference as usual.
LATER_DEFAULTS: dict[str, Any] = {
    "dataset.childplay_subset": "all",
    "teacher.attention_heads": None, "teacher.objective": "diffusion", "teacher.prior": None,  # train_teacher
    "teacher.input_size": 224,
    "keep_draws": False,  # refine (gcdr method)
    # train_student: the video student's, VAT-GC's and the K draws' settings
    "student.vat_lstm_layers": 2, "student.vat_video_trained": "decoder", "student.vat_skip_bn_for_single_row": False,
    "student.clip_length": 50, "student.chunk_length": 3, "student.inout_lr": None, "student.gradcam_folders": None,
    "student.pseudo_draws": "mean", "student.pseudo_confidence": "none", "student.pseudo_keep": 0.5,
}


def request_differences(recorded: dict[str, Any], request: dict[str, Any]) -> list[str]:
    """``["refine.T: 250 -> 100", ...]``: the keys whose values differ, dotted, old -> new (a key the recorded
    request lacks is no difference when the new value is its :data:`LATER_DEFAULTS` value)."""
    old, new = _flatten(_canonical(recorded)), _flatten(_canonical(request))
    for key, value in LATER_DEFAULTS.items():
        if key not in old and key in new and new[key] == _canonical(value):
            del new[key]
    return [f"{key}: {_short(old.get(key, _ABSENT))} -> {_short(new.get(key, _ABSENT))}"
            for key in sorted(set(old) | set(new)) if old.get(key, _ABSENT) != new.get(key, _ABSENT)]


def _has_output(folder: Path) -> bool:
    """Any file but the lock (empty folders, e.g. left by a killed run's cleaned-up temporaries, are not output)."""
    return folder.is_dir() and any(p.is_file() and p.name != LOCK_FILE for p in folder.rglob("*"))


def _empty(folder: Path) -> None:
    """Remove everything in ``folder`` but its lock file (held by this process)."""
    for path in folder.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


class StageOutput:
    """Claim ``folder`` for ``stage``'s ``request`` (see the module docstring). A context manager."""

    def __init__(self, folder: str | os.PathLike, stage: str, request: dict[str, Any],
                 config: dict[str, Any] | None = None, restart: bool = False, main_process: bool = True,
                 out_option: str = "another OUT / --out"):
        self.folder = Path(folder)
        self.stage = stage
        self.request = _canonical(request)
        self.config = dict(config) if config is not None else {}
        self.restart = restart
        self.main_process = main_process
        self.out_option = out_option
        self._lock = None

    # ----------------------------------------------------------------------------------- claiming
    def __enter__(self) -> StageOutput:
        if not self.main_process:
            return self
        self._lock = folder_lock(self.folder)
        self._lock.__enter__()
        try:
            self._claim()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._lock is not None:
            self._lock.__exit__(exc_type, exc, tb)
            self._lock = None

    def _claim(self) -> None:
        recorded = self.recorded_request()
        if self.restart and _has_output(self.folder):
            _empty(self.folder)
        elif recorded is None and _has_output(self.folder):
            raise StageOutputError(
                f"{self.folder} holds files that no {self.stage} request of gcdr claims; write elsewhere "
                f"({self.out_option}) or pass --restart (make ... RESTART=1) to empty it and start over")
        elif recorded is not None and request_differences(recorded, self.request):
            differences = request_differences(recorded, self.request)
            shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4
                                                  else "")
            raise StageOutputError(
                f"{self.folder} holds {self.stage} output of another request ({shown}); write elsewhere "
                f"({self.out_option}) or pass --restart (make ... RESTART=1) to replace it")
        if self.recorded_request() is None:
            write_json_atomic(self.folder / REQUEST_FILE, {"stage": self.stage, "request": self.request})

    # ---------------------------------------------------------------------------------- reading
    def recorded_request(self) -> dict[str, Any] | None:
        path = self.folder / REQUEST_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record.get("request") if isinstance(record, dict) and record.get("stage") == self.stage else None

    def provenance(self) -> dict[str, Any]:
        path = self.folder / PROVENANCE_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def done(self) -> bool:
        """True when a run of this request finished (provenance status "done" with this request)."""
        record = self.provenance()
        return (record.get("status") == DONE and isinstance(record.get("request"), dict)
                and not request_differences(record["request"], self.request))

    # ---------------------------------------------------------------------------------- writing
    def start_unless_done(self, wait: Callable[[], None], **details: Any) -> bool:
        """For a stage run by several processes: every process waits for the claim (or ``--restart``'s emptying),
        all agree whether the request is done; when it is not, provenance says "running" before any process
        writes. ``wait``: the processes' barrier (``PartialState.wait_for_everyone``). Returns True when done."""
        wait()
        if self.done():  # the same answer everywhere: "running" is written only when it is not done
            log.info("%s: done for this request, nothing to do", self.folder)
            return True
        self.start(**details)
        wait()
        return False

    def start(self, **details: Any) -> None:
        """Provenance with status "running" (main process only)."""
        if self.main_process:
            write_provenance(self.folder, self.stage, self.config, status="running", request=self.request,
                             **details)

    def finish(self, **details: Any) -> dict[str, Any]:
        """Provenance with status "done": from now on :meth:`done` is true for this request."""
        if not self.main_process:
            return {}
        return write_provenance(self.folder, self.stage, self.config, status=DONE, request=self.request,
                                **details)


def add_restart_arg(parser) -> None:
    """``--restart``: empty the output folder and start over (the way out of a refused request)."""
    parser.add_argument("--restart", action="store_true",
                        help="empty the output folder (another request's output, or a partial run) and start over")
