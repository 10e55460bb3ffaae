"""Clips of person tracks for spatio-temporal students (VAT's ``ModelSpatioTemporal``; docs/official-code.md#vat-spatio-temporal-model).

A track is one person in one clip (VideoAttentionTarget: ``<show>/<clip>/<person>``, gcdr.data.videoattention),
its frames the GazeDataset items of that person in file order. A *clip batch* is ``clips_per_batch`` tracks
(training: a window of at most ``clip_length`` frames of each, at a random start), walked through in *chunks*
of ``chunk_length`` time steps; each chunk is one DataLoader batch (one optimiser step when training), its rows
time-major (step 0 of every clip, then step 1, ...). Besides the GazeDataset keys every row holds

    clip_slot    int64 []   which clip of its clip batch the row belongs to (0 .. clips_per_batch - 1)
    clip_start   bool []    the row is the first frame of its clip (the model starts that clip's state at zero)

Augmentation (training): one random draw per clip window, shared by its frames (VAT draws once per clip):
every frame gets the same head-box jitter factor, flip and colour change, and crop fractions drawn from the
same numbers; the crop window itself follows each frame's own keep-region (VAT: one window for the whole
clip). VAT's VideoAttentionTarget settings: jitter k ~ U[0, 0.05), saturation U(0.5, 1.5).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from gcdr.data.dataset import GazeDataset
from gcdr.data.sample import PersonSample
from gcdr.data.transforms import AugmentConfig, augment

VIDEO_AUGMENT = AugmentConfig(jitter_max=0.05, saturation=(0.5, 1.5))  # VAT's VideoAttTarget_video


def track_of(sample: PersonSample) -> str:
    """The track a frame belongs to: VideoAttentionTarget ``<show>/<clip>/<person>/<frame>`` -> the id without
    its frame; head-box files ``<frame>|<file stem>`` -> the file stem."""
    if "|" in sample.sample_id:
        return sample.sample_id.split("|", 1)[1]
    return sample.sample_id.rsplit("/", 1)[0]


def track_frames(samples: Sequence[PersonSample]) -> list[list[int]]:
    """Indices of ``samples`` per track, tracks in order of first appearance, frames in sample order."""
    tracks: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        tracks.setdefault(track_of(sample), []).append(index)
    return list(tracks.values())


class ClipDataset(Dataset):
    """The frames of a GazeDataset addressed as rows of clips.

    Keys are ``(frame index, clip key, slot, start)`` as :class:`ClipChunkSampler` yields them; items are the
    GazeDataset item of the frame plus ``clip_slot`` and ``clip_start``. With ``augmented`` (and a training
    GazeDataset) the frames of one clip key share their random draws (module docstring). ``len``, ``samples``
    and ``sample(i)`` are the frames'.
    """

    def __init__(self, frames: GazeDataset, augmented: bool = False, augment_config: AugmentConfig = VIDEO_AUGMENT):
        self.base = frames
        self.samples = frames.samples
        self.tracks = track_frames(frames.samples)
        self.augmented = augmented and frames.train
        self.augment_config = augment_config
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)

    def sample(self, index: int) -> PersonSample:
        return self.base.sample(index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __getitem__(self, key: tuple[int, int, int, bool]) -> dict[str, torch.Tensor]:
        frame, clip_key, slot, start = key
        base = self.base
        index, image = base._read_image(frame)
        view, prior_valid = base._view(index, image)
        if self.augmented:  # one generator state per clip window: the same draws for each of its frames
            view = augment(view, np.random.default_rng([base.seed, self.epoch, clip_key]), base.style,
                           self.augment_config)
        item = base._item(index, image, view, prior_valid)
        item["clip_slot"] = torch.tensor(slot, dtype=torch.int64)
        item["clip_start"] = torch.tensor(bool(start))
        return item


class ClipChunkSampler(Sampler[list[tuple[int, int, int, bool]]]):
    """Chunks of clip batches (module docstring), reshuffled per epoch from ``seed`` when ``shuffle``.

    tracks: frame indices per track (:func:`track_frames`); clip_length: at most this many frames of a track
    per epoch, from a random start (None = whole tracks, as VAT evaluates). ``len`` = chunks of the epoch
    set with :meth:`set_epoch`.
    """

    def __init__(self, tracks: Sequence[Sequence[int]], clips_per_batch: int, chunk_length: int,
                 clip_length: int | None = None, shuffle: bool = False, seed: int = 0):
        if clips_per_batch < 1 or chunk_length < 1 or (clip_length is not None and clip_length < 1):
            raise ValueError("clips_per_batch, chunk_length and clip_length must be >= 1")
        self.tracks = [list(track) for track in tracks if len(track)]
        if not self.tracks:
            raise ValueError("no tracks")
        self.clips_per_batch, self.chunk_length, self.clip_length = clips_per_batch, chunk_length, clip_length
        self.shuffle, self.seed = shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._chunks())

    def __iter__(self) -> Iterator[list[tuple[int, int, int, bool]]]:
        yield from self._chunks()

    def _chunks(self) -> list[list[tuple[int, int, int, bool]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.tracks)) if self.shuffle else np.arange(len(self.tracks))
        chunks = []
        for first in range(0, len(order), self.clips_per_batch):
            windows = []  # (clip key, frame indices) per slot
            for track_number in order[first:first + self.clips_per_batch].tolist():
                frames = self.tracks[track_number]
                start = 0
                if self.clip_length is not None and len(frames) > self.clip_length:
                    start = int(rng.integers(0, len(frames) - self.clip_length))  # VAT: randint(0, n - limit)
                    frames = frames[start:start + self.clip_length]
                windows.append((track_number * 1_000_003 + start, frames))
            longest = max(len(frames) for _, frames in windows)
            for t0 in range(0, longest, self.chunk_length):
                chunks.append([(frames[t], key, slot, t == 0)
                               for t in range(t0, min(t0 + self.chunk_length, longest))
                               for slot, (key, frames) in enumerate(windows) if t < len(frames)])
        return chunks
