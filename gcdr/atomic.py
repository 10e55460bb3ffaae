"""Atomic file writes: a reader never sees a half-written file, an interrupted job leaves none behind.

A job killed hard (SIGKILL, power loss) cannot remove its temporary file; the next run of the stage that owns
the folder removes them with :func:`remove_stale_temporaries` (under the folder's lock, gcdr.locking).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)
# the names atomic_path gives its temporary files: ".<stem>.<8 random characters of mkstemp>.tmp<suffix>"
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` in one step.

    The temporary file keeps the final suffix (some writers, e.g. ``np.save``/``cv2.imwrite``, look at it).
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)  # TEMPORARY_NAME
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv_atomic(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as CSV; the columns are the union of the rows' keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` left in ``folder`` and its direct subfolders (parts/,
    previews/, model/, tb/) by a killed job; returns the removed paths.

    Only safe while no other job writes into ``folder``: call it holding the folder's lock (gcdr.locking).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    directories = [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]
    removed = []
    for directory in directories:
        for path in directory.iterdir():
            if TEMPORARY_NAME.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info("%s: removed %d temporary files left by an interrupted run, e.g. %s", folder, len(removed),
                 removed[0].relative_to(folder))
    return removed
