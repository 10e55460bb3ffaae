"""One job per output folder, and a quiet end on Ctrl-C.

``folder_lock(folder)`` holds an OS file lock (``fcntl.flock``) on ``<folder>/.lock`` for as long as a stage writes
into the folder: a second job on the same folder is refused with one line naming the process that holds it. The
kernel releases the lock when its process ends, however it ends (Ctrl-C, SIGKILL, a crash), so a lock is never
left behind by a dead job; the file itself stays (it only records who holds the lock). Once the lock is held,
the temporary files a killed job left in the folder are removed (gcdr.atomic.remove_stale_temporaries).

``run_stage(main)`` runs a pipeline's main: Ctrl-C ends it with one line and exit code 130, and the one-line
errors meant for the user (gcdr.errors.UserError: a folder in use, a bad config, a damaged or unfinished input,
another request's output) are printed without a traceback (exit code 1; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gcdr.atomic import remove_stale_temporaries
from gcdr.errors import UserError

LOCK_FILE = ".lock"
INTERRUPTED = "interrupted; rerun the same command to continue"


class FolderInUseError(UserError, RuntimeError):
    """Another process holds the folder's lock; the message names the folder, the process and the lock file."""


def _holder(fd: int) -> tuple[str, str]:
    """(pid, since) as written by the lock's holder ("unknown" when it has not written them yet)."""
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    return (text[0] if text else "unknown"), (text[1] if len(text) > 1 else "an unknown time")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, enabled: bool = True, clean: bool = True) -> Iterator[Path | None]:
    """Hold ``<folder>/.lock`` (created with the folder if needed) for the duration of the block.

    enabled: False yields without locking (the other processes of a multi-process run: their main process
             holds the lock for all of them).
    clean:   remove the temporary files of killed runs once the lock is held.
    Raises :class:`FolderInUseError` when another process holds the lock (also another lock of this process).
    """
    if not enabled:
        yield None
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid, since = _holder(fd)
            raise FolderInUseError(f"{folder} is in use by process {pid} since {since}; wait for it or remove "
                                   f"{path} if that process is gone") from None
        since = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {since}\n".encode(), 0)
        if clean:
            remove_stale_temporaries(folder)
        yield path
    finally:
        os.close(fd)  # closing the only descriptor of the open file releases the lock


def run_stage(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a pipeline's ``main``: Ctrl-C -> one line and exit code 130; a :class:`gcdr.errors.UserError` -> one
    line and exit code 1, without a traceback unless ``--debug`` is on the command line (or GCDR_DEBUG=1)."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("GCDR_DEBUG", "") not in ("", "0")
    if "--debug" in sys.argv[1:]:
        sys.argv.remove("--debug")  # not an option of any stage's own parser
    try:
        return main(*args, **kwargs)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting prints nothing either
        print(INTERRUPTED, file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except UserError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
