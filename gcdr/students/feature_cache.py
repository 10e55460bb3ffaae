"""Gaze-LLE feature cache: the DINOv2 backbone is frozen, so its features of an image never change.

Compute them once per image (un-augmented view: the whole image resized to the model's input size) and
reuse them every epoch and across student runs that share the backbone. What the cache gives up:
image-level augmentation. Crops, colour jitter and flips change the pixels the backbone sees, so they
cannot be applied to cached features; only a flip can be approximated by mirroring the feature map
(``flip=True``; DINOv2 is not exactly flip-equivariant). Head-box jitter still works: the head token
is added after the backbone.

Layout: ``<root>/<key>/<sha1 of the image path>.npy`` (float16 [D, g, g]) plus ``backbone.json``; the key
hashes the backbone identity (hub id or directory, with its weight files' sizes and times) and the
input size. Files are written atomically, so an interrupted fill resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gcdr.atomic import atomic_path, write_json_atomic
from gcdr.data.dataset import GazeDataset

log = logging.getLogger(__name__)

LABEL_KEYS = ("head_box_xyxy_norm", "target_heatmap_64", "has_target", "prior_heatmap_64", "prior_valid",
              "inout", "is_labeled", "gaze_points_norm", "num_gaze_points", "image_size_wh")
OPTIONAL_LABEL_KEYS = ("prior_weight",)  # collected when the base dataset's items hold them
HALF_KEYS = ("target_heatmap_64", "prior_heatmap_64")  # stored as float16 to halve the memory
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3


def backbone_identity(backbone: str, input_size: int) -> dict[str, Any]:
    """What makes features differ: the backbone (id or directory with its weight files) and the input size."""
    identity: dict[str, Any] = {"backbone": str(backbone), "input_size": int(input_size)}
    path = Path(backbone)
    if path.is_dir():
        identity["backbone"] = str(path.resolve())
        identity["files"] = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(path.iterdir())
                             if p.suffix in (".json", ".safetensors", ".bin")}
    return identity


class FeatureCache:
    """Backbone features per image path on disk (float16 [D, g, g] per image)."""

    def __init__(self, root: str | Path, backbone: str, input_size: int):
        identity = backbone_identity(backbone, input_size)
        key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(root) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "backbone.json").exists():
            write_json_atomic(self.folder / "backbone.json", identity)

    def path(self, image_path: str) -> Path:
        """The image's feature file: keyed by its path, size and modification time, so a regenerated image
        (a new dataset written at the same path) never reads the old image's features."""
        stat = Path(image_path).stat()
        key = f"{Path(image_path).absolute()}|{stat.st_size}|{stat.st_mtime_ns}"
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.npy"

    def has(self, image_path: str) -> bool:
        return self.path(image_path).exists()

    def load(self, image_path: str) -> np.ndarray:
        return np.load(self.path(image_path))

    def save(self, image_path: str, features: np.ndarray) -> None:
        with atomic_path(self.path(image_path)) as tmp:
            np.save(tmp, np.asarray(features, np.float16))


class CachedFeatureDataset(Dataset):
    """A GazeDataset (``train=False``, gazelle style) whose scenes are replaced by cached backbone features.

    Items hold the base dataset's label keys plus ``"features"`` [D, g, g] float32 and ``"index"``.
    ``train=True`` applies what survives caching: Gaze-LLE's box jitter (p = 0.5, each side moved by
    U(-0.2, 0.2) x box size, clamped to the image) and, with ``flip``, a horizontal flip (p = 0.5) of
    features, box and maps. Randomness per (seed, epoch, index) as GazeDataset. With a base of
    ``pseudo_draws="per_pass"`` the prior is not the one collected at build time but the base's draw of the
    current epoch (:meth:`GazeDataset.prior_64`, un-augmented as the cache's base), flipped with the item.

    Build with :meth:`build`, which runs the base dataset once (decoding each image once per person to get
    the labels) and computes missing features with ``backbone`` (one forward per image).
    """

    def __init__(self, base: GazeDataset, labels: dict[str, torch.Tensor], image_ids: list[int],
                 image_paths: list[str], cache: FeatureCache, train: bool, flip: bool = False, seed: int = 0):
        self.base = base
        self.labels = labels
        self.image_ids = image_ids
        self.image_paths = image_paths
        self.cache = cache
        self.train = train
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self._features: torch.Tensor | None = None
        sizes = [cache.path(p).stat().st_size for p in image_paths[:1]]
        if sizes and sizes[0] * len(image_paths) < IN_MEMORY_LIMIT_BYTES:
            self._features = torch.from_numpy(np.stack([cache.load(p) for p in image_paths]))  # [I, D, g, g]

    @classmethod
    @torch.no_grad()
    def build(cls, base: GazeDataset, backbone: torch.nn.Module, cache: FeatureCache, *, train: bool,
              flip: bool = False, seed: int = 0, batch_size: int = 16, num_workers: int = 0,
              device: torch.device | str = "cpu", compute: bool = True, progress: bool = True
              ) -> CachedFeatureDataset:
        """One pass over ``base`` collecting labels; features of uncached images computed and stored.

        compute=False only collects labels and expects the features to be there (other processes of a
        multi-process run, after the main process filled the cache).
        """
        if base.train or base.style != "gazelle":
            raise ValueError("the feature cache needs a gazelle-style GazeDataset with train=False")
        image_paths: list[str] = []
        path_to_id: dict[str, int] = {}
        image_ids = []
        for sample in base.samples:
            if sample.image_path not in path_to_id:
                path_to_id[sample.image_path] = len(image_paths)
                image_paths.append(sample.image_path)
            image_ids.append(path_to_id[sample.image_path])
        todo = {p for p in image_paths if not cache.has(p)} if compute else set()
        log.info("feature cache %s: %d images, %d to compute", cache.folder, len(image_paths), len(todo))
        columns: dict[str, list[torch.Tensor]] = {k: [] for k in LABEL_KEYS}
        loader = DataLoader(base, batch_size=batch_size, num_workers=num_workers, shuffle=False)
        backbone = backbone.to(device).eval()
        for batch in tqdm(loader, desc="feature cache", disable=not progress):
            for key in (*LABEL_KEYS, *(k for k in OPTIONAL_LABEL_KEYS if k in batch)):
                columns.setdefault(key, []).append(batch[key].half() if key in HALF_KEYS else batch[key])
            rows, paths = [], []
            for row, index in enumerate(batch["index"].tolist()):
                path = base.samples[index].image_path
                if path in todo and path not in paths:
                    rows.append(row)
                    paths.append(path)
            if rows:
                features = backbone(batch["scene"][rows].to(device)).float().cpu().numpy()  # [n, D, g, g]
                for path, feature in zip(paths, features):
                    cache.save(path, feature)
                    todo.discard(path)
        labels = {k: torch.cat(v) for k, v in columns.items()}
        missing = [p for p in image_paths if not cache.has(p)]
        if missing:
            raise RuntimeError(f"feature cache {cache.folder}: {len(missing)} images have no features, "
                               f"e.g. {missing[0]}")
        return cls(base, labels, image_ids, image_paths, cache, train=train, flip=flip, seed=seed)

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample(self, index: int):
        return self.base.sample(index)

    @property
    def samples(self):
        return self.base.samples

    def features(self, index: int) -> torch.Tensor:
        image_id = self.image_ids[index]
        if self._features is not None:
            return self._features[image_id].float()
        return torch.from_numpy(self.cache.load(self.image_paths[image_id])).float()

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, draw = key if isinstance(key, tuple) else (key, 0)  # draw: as GazeDataset
        item = {name: values[index] for name, values in self.labels.items()}
        for key in HALF_KEYS:
            item[key] = item[key].float()
        if self.base.pseudo_draws == "per_pass":  # the target changes per pass: not the map collected once
            prior, _ = self.base.prior_64(index, self.epoch)
            if prior is not None:
                item["prior_heatmap_64"] = torch.from_numpy(prior)
        item["features"] = self.features(index)  # [D, g, g]
        item["index"] = torch.tensor(index, dtype=torch.int64)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index, draw])
            if self.flip and rng.random() < 0.5:
                item = _flip_item(item)
            if rng.random() < 0.5:
                item["head_box_xyxy_norm"] = _jitter_box_norm(item["head_box_xyxy_norm"], rng)
        return item


def _jitter_box_norm(box: torch.Tensor, rng: np.random.Generator, max_fraction: float = 0.2) -> torch.Tensor:
    """Gaze-LLE's jitter on a normalised box: each side moved by U(-f, f) x box width / height, clamped to [0, 1]."""
    x1, y1, x2, y2 = box.double().tolist()
    w, h = x2 - x1, y2 - y1
    dx1, dy1, dx2, dy2 = rng.uniform(-max_fraction, max_fraction, 4)
    jittered = np.clip([x1 + dx1 * w, y1 + dy1 * h, x2 + dx2 * w, y2 + dy2 * h], 0.0, 1.0)
    return torch.tensor(jittered, dtype=box.dtype)


def _flip_item(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mirror features, head box, maps and gaze points horizontally."""
    item = dict(item)
    item["features"] = item["features"].flip(-1)
    x1, y1, x2, y2 = item["head_box_xyxy_norm"].tolist()
    item["head_box_xyxy_norm"] = torch.tensor([1 - x2, y1, 1 - x1, y2], dtype=item["head_box_xyxy_norm"].dtype)
    item["target_heatmap_64"] = item["target_heatmap_64"].flip(-1)
    item["prior_heatmap_64"] = item["prior_heatmap_64"].flip(-1)
    points = item["gaze_points_norm"].clone()
    valid = points[:, 0] >= 0
    points[valid, 0] = 1 - points[valid, 0]
    item["gaze_points_norm"] = points
    return item
