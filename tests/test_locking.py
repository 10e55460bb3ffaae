"""gcdr.locking: one job per output folder, temporaries of killed jobs removed, Ctrl-C as one line (exit 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gcdr.atomic import TEMPORARY_NAME, atomic_path, remove_stale_temporaries
from gcdr.locking import INTERRUPTED, LOCK_FILE, FolderInUseError, folder_lock, run_stage

HOLD = ("import sys, time\nfrom gcdr.locking import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n")


def hold_lock(folder) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_on_a_locked_folder_is_refused_until_the_holder_dies(tmp_path):
    folder = tmp_path / "out"
    holder = hold_lock(folder)
    try:
        with pytest.raises(FolderInUseError) as error:
            with folder_lock(folder):
                pass
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"{folder} is in use by process {holder.pid} since ")
        assert message.endswith(f"; wait for it or remove {folder / LOCK_FILE} if that process is gone")
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel releases the lock
        holder.wait()
    with folder_lock(folder) as lock:
        assert lock == folder / LOCK_FILE
        assert lock.read_text().split()[0] == str(os.getpid())
    with folder_lock(folder):  # released at the end of the block
        pass
    with folder_lock(folder, enabled=False) as lock:  # the other processes of a multi-process run
        assert lock is None


def test_stale_temporaries_are_removed_by_the_next_run(tmp_path):
    folder = tmp_path / "out"
    (folder / "parts").mkdir(parents=True)
    for name in ("rank0-00001.heatmap_64.npy", "history"):
        with atomic_path(folder / "parts" / name) as tmp:  # the names a kill inside the block leaves behind
            assert TEMPORARY_NAME.match(tmp.name), tmp.name
    stale = [folder / ".manifest.k3x9_a2b.tmp.csv", folder / "parts" / ".rank0-00001.heatmap_64.0123abcd.tmp.npy",
             folder / ".summary.zzzzzzzz.tmp.json", folder / ".history.abcdefgh.tmp"]
    kept = [folder / "manifest.csv", folder / ".hidden", folder / "parts" / "rank0-00001.csv",
            folder / ".notes.tmp.txt"]
    for path in stale + kept:
        path.write_text("x")
    with folder_lock(folder):
        assert not any(p.exists() for p in stale), [p for p in stale if p.exists()]
        assert all(p.exists() for p in kept)
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stop:
            run_stage(interrupted)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stop.value.code == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"

    def in_use():
        raise FolderInUseError("/x is in use by process 1 since now; wait for it or remove /x/.lock if that process is gone")

    with pytest.raises(SystemExit) as stop:
        run_stage(in_use)
    assert stop.value.code == 1 and capsys.readouterr().err.count("\n") == 1
    assert run_stage(lambda a, b=0: a + b, 1, b=2) == 3


def test_sigint_to_a_running_stage_prints_one_line_without_traceback():
    # Python's own Ctrl-C handler first: under a shell's background job (`make test &`) SIGINT arrives ignored
    script = ("import signal, time\nfrom gcdr.locking import run_stage\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "def main():\n    print('ready', flush=True)\n    time.sleep(60)\n"
              "run_stage(main)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines() == [INTERRUPTED]
