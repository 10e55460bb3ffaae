"""Labeled / unlabeled splits: seeded, byte-identical rows, disjoint, complete; GCDR's files load the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from gcdr.data import load_samples
from gcdr.data.gazefollow import key_of_sample_id, read_gazefollow
from gcdr.data.splits import make_split, split_file_names, split_gazefollow
from gcdr.paths import split_files
from gcdr.stage_output import StageOutputError
from pipelines import split as split_pipeline
from pipelines.split import SplitEditedError

N_ROWS = 203


def write_train_file(path: Path, seed: int = 0) -> list[str]:
    """A 21-column train file: rows 0-6 are special (inout -1 x 3, an inverted box, an empty box)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(N_ROWS):
        eye_x, eye_y, gaze_x, gaze_y = rng.random(4).round(6)
        x1, y1 = rng.integers(0, 300, 2)
        box = [x1, y1, x1 + 30, y1 + 40]
        inout = -1 if i in (0, 1, 2) else int(rng.integers(0, 2))
        if i == 3:
            box = [x1 + 30, y1, x1, y1 + 40]  # inverted: repaired and kept
        if i == 4:
            box = [x1, y1, x1, y1 + 40]       # empty: dropped
        lines.append(f"train/{i // 3:08d}/{i // 3:08d}.jpg,{i},0.1,0.2,0.3,0.4,{eye_x},{eye_y},{gaze_x},{gaze_y},"
                     f"{box[0]},{box[1]},{box[2]},{box[3]},{inout},meta{i},orig{i}.jpg,{x1},{y1},{x1 + 80},{y1 + 200}")
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    train_file = tmp_path / "train.txt"
    lines = write_train_file(train_file)
    n_usable = N_ROWS - 3 - 1  # inout -1 rows and the empty box
    result = make_split(train_file, 0.1, 0, tmp_path / "a")
    assert result.use_file.name == "train_annotations_weak_ratio0.1_use.txt"
    assert result.left_file.name == "train_annotations_weak_ratio0.1_left.txt"
    assert result.n_labeled == round(n_usable * 0.1) == 20
    assert result.n_unlabeled == n_usable - 20
    use_lines = result.use_file.read_text().splitlines()
    left_lines = result.left_file.read_text().splitlines()
    assert len(use_lines) == 20 and len(left_lines) == n_usable - 20
    assert not set(use_lines) & set(left_lines)
    usable = [line for i, line in enumerate(lines) if i not in (0, 1, 2, 4)]
    assert sorted(use_lines + left_lines) == sorted(usable)  # union = every usable row, bytes unchanged

    again = make_split(train_file, 0.1, 0, tmp_path / "b")
    assert again.use_file.read_bytes() == result.use_file.read_bytes()
    assert again.left_file.read_bytes() == result.left_file.read_bytes()
    other_seed = make_split(train_file, 0.1, 1, tmp_path / "c")
    assert other_seed.use_file.read_bytes() != result.use_file.read_bytes()
    assert make_split(train_file, 0.05, 0, tmp_path / "d").n_labeled == round(n_usable * 0.05) == 10


def test_membership_matches_the_files(tmp_path):
    train_file = tmp_path / "train.txt"
    write_train_file(train_file)
    result = make_split(train_file, 0.2, 3, tmp_path)
    train = read_gazefollow(train_file, tmp_path)
    labeled, unlabeled = split_gazefollow(train, result.use_file, result.left_file)
    assert len(labeled) == result.n_labeled and len(unlabeled) == result.n_unlabeled
    assert len(labeled) + len(unlabeled) == len(train)
    use_ids = {read.sample_id for read in read_gazefollow(result.use_file, tmp_path)}
    assert {s.sample_id for s in labeled} == use_ids


def test_gcdr_released_use_file_loads_as_labeled(tmp_path):
    """GCDR's files are written by pandas (other float text); membership is by (path, eye_x) value."""
    root = tmp_path / "data"
    root.mkdir()
    lines = write_train_file(root / "train.txt")
    cfg = {"dataset": {"format": "gazefollow", "root": str(root), "train_file": "train.txt",
                       "test_file": "train.txt"},
           "split": {"ratio": 0.1, "seed": 7, "dir": str(tmp_path / "splits")}}
    use_file, left_file = split_files(cfg)
    use_file.parent.mkdir(parents=True)

    def reformatted(line: str) -> str:  # "0.5" -> "0.50000000", as another writer may print it
        fields = line.split(",")
        fields[6] = f"{float(fields[6]):.8f}"
        return ",".join(fields)

    use_file.write_text("\n".join(reformatted(line) for line in lines[10:13]) + "\n")
    left_file.write_text("\n".join(reformatted(line) for line in lines[13:]) + "\n")
    labeled = load_samples(cfg, "labeled")
    assert [s.meta for s in labeled] == ["meta10", "meta11", "meta12"]
    unlabeled = load_samples(cfg, "unlabeled")
    assert len(unlabeled) == N_ROWS - 13
    assert not {key_of_sample_id(s.sample_id) for s in labeled} & {key_of_sample_id(s.sample_id) for s in unlabeled}
    # the split stage keeps files it did not write
    assert split_pipeline.run(cfg) is None
    assert use_file.read_text().splitlines()[0] == reformatted(lines[10])


def test_split_stage_writes_once_and_records_provenance(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_train_file(root / "train.txt")
    config = tmp_path / "config.yaml"
    config.write_text(f"name: t\ndataset: {{format: gazefollow, root: {root}, train_file: train.txt, "
                      f"test_file: train.txt}}\nsplit: {{ratio: 0.2, seed: 0, dir: {tmp_path / 'splits'}}}\n")
    assert split_pipeline.main(["--config", str(config), "--set", "split.ratio=0.1", "--set", "split.seed=1"]) == 0
    folder = tmp_path / "splits" / "seed1"
    use_name, left_name = split_file_names(0.1)
    record = json.loads((folder / "provenance.json").read_text())
    assert record["stage"] == "split" and record["splits"]["0.1"]["counts"]["labeled"] == 20
    import torch
    assert record["libraries"]["numpy"] == np.__version__  # the kernels the numbers came from
    assert torch.__version__.startswith(record["libraries"]["torch"])  # the wheel's "+cu130" tag aside
    mtime = os.stat(folder / use_name).st_mtime_ns
    split_pipeline.main(["--config", str(config), "--set", "split.ratio=0.1", "--set", "split.seed=1"])
    assert os.stat(folder / use_name).st_mtime_ns == mtime  # same request: nothing rewritten

    split_pipeline.main(["--config", str(config), "--set", "split.seed=1"])  # ratio 0.2 beside it
    record = json.loads((folder / "provenance.json").read_text())
    assert set(record["splits"]) == {"0.1", "0.2"}

    use_file = folder / use_name
    use_file.write_text(use_file.read_text() + "\n")  # edited by hand: refused, one line
    with pytest.raises(SplitEditedError) as edited:
        split_pipeline.main(["--config", str(config), "--set", "split.ratio=0.1", "--set", "split.seed=1"])
    assert "\n" not in str(edited.value) and str(use_file) in str(edited.value) and "--restart" in str(edited.value)

    write_train_file(root / "train.txt", seed=5)  # the train file changed: refused in one line naming it
    with pytest.raises(StageOutputError) as refused:
        split_pipeline.main(["--config", str(config), "--set", "split.ratio=0.1", "--set", "split.seed=1"])
    message = str(refused.value)
    assert "\n" not in message and "train_sha256:" in message and "--restart" in message, message
    assert "seed" not in message.split("(")[1].split(")")[0]  # only what differs is named
    split_pipeline.main(["--config", str(config), "--set", "split.ratio=0.1", "--set", "split.seed=1", "--restart"])
    assert (folder / left_name).read_text() != ""
    assert os.stat(folder / use_name).st_mtime_ns != mtime
    record = json.loads((folder / "provenance.json").read_text())
    assert set(record["splits"]) == {"0.1"}  # --restart emptied the folder: the 0.2 split is gone
    split_pipeline.main(["--config", str(config), "--set", "split.seed=1", "--force"])  # --force = --restart
    assert set(json.loads((folder / "provenance.json").read_text())["splits"]) == {"0.2"}


def test_split_command_refusal_is_one_line_on_stderr(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "data"
    root.mkdir()
    write_train_file(root / "train.txt")
    config = tmp_path / "config.yaml"
    config.write_text(f"name: t\ndataset: {{format: gazefollow, root: {root}, train_file: train.txt, "
                      f"test_file: train.txt}}\nsplit: {{ratio: 0.1, seed: 0, dir: {tmp_path / 'splits'}}}\n")
    split_pipeline.main(["--config", str(config)])
    write_train_file(root / "train.txt", seed=5)
    done = subprocess.run([sys.executable, "-m", "pipelines.split", "--config", str(config)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "train_sha256" in lines[-1] and "Traceback" not in done.stderr


def test_missing_split_files_and_unknown_split_are_clear_errors(tmp_path):
    write_train_file(tmp_path / "train.txt")
    cfg = {"dataset": {"format": "gazefollow", "root": str(tmp_path), "train_file": "train.txt"},
           "split": {"ratio": 0.1, "seed": 0, "dir": str(tmp_path / "splits")}}
    with pytest.raises(FileNotFoundError, match=r"ratio0\.1_use\.txt.*pipelines\.split"):
        load_samples(cfg, "labeled")
    with pytest.raises(ValueError, match="split must be one of"):
        load_samples(cfg, "validation")
    with pytest.raises(ValueError, match="dataset.format"):
        load_samples({"dataset": {"format": "coco"}}, "train")
