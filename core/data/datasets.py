"""Datasets: load, split (stratified, seeded), describe, and batch images for training.

Everything is held as uint8 [N, C, H, W] tensors when it fits in memory; batches are then index
slices (no per-sample Python in the hot loop). Folders too large for memory stream through a
DataLoader with workers. Normalisation and augmentation happen later, on whole batches
(core.data.augment), so both paths hand the trainer the same thing: (uint8 images, int64 labels).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from core.config import FOLDER_DATASETS, SETTINGS, RunConfig
from core.data import standard_sets
from core.data.folders import DatasetError, Refusal, list_folder
from core.data.images import ImageRefused, decode, read_image_file
from core.data.standard_sets import STANDARD_SETS
from core.models.registry import MODEL_SPECS

SPLITS = ("train", "val", "test")
SKIPPED_NAMED_IN_INFO = 20          # info() names this many skipped files; status.json stays small
IN_MEMORY_LIMIT_BYTES = int(os.environ.get("TRAINBOARD_IN_MEMORY_LIMIT", 2 * 1024**3))


# --- splits ---------------------------------------------------------------------------------
class MemorySplit:
    """One split held as a uint8 tensor; batches are index slices. `files`: each sample's file, for
    folder datasets (None for digits and the standard sets)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, files: list[str] | None = None):
        self.images, self.labels, self.files = images, labels, files

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: torch.Tensor, batch_size: int, **_):
        for images, labels, _ in self.positioned_batches(order, batch_size):
            yield images, labels

    def positioned_batches(self, order: torch.Tensor, batch_size: int, **_):
        """(images, labels, positions in the split) per batch."""
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index], index

    def to(self, device) -> "MemorySplit":
        return MemorySplit(self.images.to(device), self.labels.to(device), self.files)

    def sample(self, index: int) -> torch.Tensor:
        return self.images[index]


class _FileImages(torch.utils.data.Dataset):
    def __init__(self, files, labels, size, channels):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return torch.from_numpy(decode_file(self.files[i], self.size, self.channels)), self.labels[i], i
        except ImageRefused as refused:
            return Refusal(self.files[i], str(refused))


def _collate_skipping_unreadable(items):
    """(images, labels, positions, refusals); all but refusals are None when every file was refused.
    Positions say which samples of the split survived, so predictions stay tied to their files."""
    refusals = [item for item in items if isinstance(item, Refusal)]
    items = [item for item in items if not isinstance(item, Refusal)]
    if not items:
        return None, None, None, refusals
    return (torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items], dtype=torch.int64),
            torch.tensor([i for _, _, i in items], dtype=torch.int64), refusals)


class StreamingSplit:
    """One split of a large folder, decoded on the fly by DataLoader workers."""

    def __init__(self, files: list[str], labels: list[int], size: int, channels: int, workers: int):
        self.files, self.label_list = files, labels
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.size, self.channels, self.workers = size, channels, workers
        self.refused: dict[str, str] = {}      # path -> reason, found while streaming

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, order: torch.Tensor, batch_size: int, pin_memory: bool = False):
        for images, labels, _ in self.positioned_batches(order, batch_size, pin_memory):
            yield images, labels

    def positioned_batches(self, order: torch.Tensor, batch_size: int, pin_memory: bool = False):
        """(images, labels, positions in the split) per batch; unreadable files are left out."""
        loader = torch.utils.data.DataLoader(
            _FileImages(self.files, self.label_list, self.size, self.channels),
            batch_size=batch_size, sampler=order.tolist(), num_workers=self.workers,
            collate_fn=_collate_skipping_unreadable, pin_memory=pin_memory,
            persistent_workers=False)
        for images, labels, positions, refusals in loader:
            self.refused.update(refusals)
            if images is not None:
                yield images, labels, positions

    def to(self, device) -> "StreamingSplit":
        return self

    def sample(self, index: int) -> torch.Tensor:
        try:
            return torch.from_numpy(decode_file(self.files[index], self.size, self.channels))
        except ImageRefused:
            return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    splits: dict                      # "train" / "val" / "test" -> MemorySplit | StreamingSplit
    mean: list[float]
    std: list[float]
    skipped: list[Refusal] = field(default_factory=list)   # (path, reason) of files left out
    streaming: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        split = self.splits["train"]
        if isinstance(split, MemorySplit):
            return tuple(split.images.shape[1:])
        return (split.channels, split.size, split.size)

    def counts(self) -> dict[str, list[int]]:
        """Samples per class in each split."""
        return {name: torch.bincount(split.labels.cpu(), minlength=len(self.classes)).tolist()
                for name, split in self.splits.items()}

    def refused_files(self) -> list[Refusal]:
        """Every file left out: those found at load, and for a streamed folder those found since."""
        found = dict(self.skipped)
        for split in self.splits.values():
            found.update(getattr(split, "refused", {}))
        return [Refusal(path, reason) for path, reason in found.items()]

    def info(self) -> dict:
        refused = self.refused_files()
        return {"name": self.name, "classes": self.classes, "input_shape": list(self.input_shape),
                "counts": self.counts(), "sizes": {k: len(v) for k, v in self.splits.items()},
                "mean": self.mean, "std": self.std, "skipped": len(refused),
                "skipped_files": [{"file": path, "reason": reason}
                                  for path, reason in refused[:SKIPPED_NAMED_IN_INFO]],
                "streaming": self.streaming}


# --- decoding -------------------------------------------------------------------------------
def decode_file(path: str, size: int, channels: int) -> np.ndarray:
    """An image file as uint8 [C, size, size]; ImageRefused says why it cannot be used."""
    return decode(read_image_file(path), size, channels)


def _decode_or_refusal(path: str, size: int, channels: int) -> np.ndarray | Refusal:
    try:
        return decode_file(path, size, channels)
    except ImageRefused as refused:
        return Refusal(path, str(refused))


def decode_files(files: list[str], size: int, channels: int) -> tuple[list[np.ndarray | None], list[Refusal]]:
    """Each file decoded (None where refused, in order), and the refusals with their reasons."""
    # PIL releases the GIL while decoding, so a few threads help even on 2 cores.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(lambda f: _decode_or_refusal(f, size, channels), files, chunksize=64))
    refused = [r for r in results if isinstance(r, Refusal)]
    return [None if isinstance(r, Refusal) else r for r in results], refused


# --- splitting ------------------------------------------------------------------------------
def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for one class of n samples; train keeps at least one."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    while n_val + n_test >= n and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Indices of each split, the same class proportions in each, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train, n_val, _ = split_counts(len(members), val_fraction, test_fraction)
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return {name: np.sort(np.concatenate(chunks)) if chunks else np.array([], dtype=np.int64)
            for name, chunks in parts.items()}


# --- sources --------------------------------------------------------------------------------
def _resize_uint8(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """[N, C, H, W] uint8 -> [N, channels, size, size] uint8."""
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != size or images.shape[-2] != size:
        chunks = [torch.nn.functional.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                                                  align_corners=False, antialias=True)
                  for chunk in images.split(4096)]
        images = torch.cat(chunks).round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _digits():
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    return [str(name) for name in bunch.target_names], images, bunch.target.astype(np.int64)


def load_dataset(config: RunConfig) -> Dataset:
    """The dataset of a config, split and ready to batch; DatasetError when it cannot be used."""
    size, channels = config.image_size, config.channels
    skipped: list[Refusal] = []
    streaming = False
    if config.dataset == "digits":
        classes, images, labels = _digits()
        images = _resize_uint8(images, size, channels)
    elif config.dataset in STANDARD_SETS:
        classes, parts = standard_sets.read(config.dataset, standard_sets.data_root(config.data_path))
        (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
        images = _resize_uint8(torch.from_numpy(np.concatenate([train_x, test_x])), size, channels)
        labels = np.concatenate([train_y, test_y])
    elif config.dataset in FOLDER_DATASETS:
        listing = list_folder(config)
        classes, files, label_list = listing.classes, listing.files, listing.labels
        streaming = len(files) * channels * size * size > IN_MEMORY_LIMIT_BYTES
        if not streaming:
            decoded, skipped = decode_files(files, size, channels)
            keep = [i for i, image in enumerate(decoded) if image is not None]
            if skipped:
                warnings.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0].path}: "
                              f"{skipped[0].reason}", stacklevel=2)
            if not keep:
                raise DatasetError(f"none of the {len(files)} images in {config.data_path} could be read "
                                   f"(e.g. {skipped[0].path}: {skipped[0].reason})")
            images = torch.from_numpy(np.stack([decoded[i] for i in keep]))
            labels = np.asarray(label_list, dtype=np.int64)[keep]
            files = [files[i] for i in keep]
        else:
            labels = np.asarray(label_list, dtype=np.int64)
    else:
        raise DatasetError(f"unknown dataset {config.dataset!r}")

    if config.dataset in STANDARD_SETS:
        n_train = len(train_y)
        inner = stratified_split(labels[:n_train], config.val_fraction, 0.0, config.seed)
        index = {"train": inner["train"], "val": inner["val"],
                 "test": np.arange(n_train, len(labels))}
    else:
        index = stratified_split(labels, config.val_fraction, config.test_fraction, config.seed)

    if streaming:
        splits = {name: StreamingSplit([files[i] for i in idx], labels[idx].tolist(), size, channels,
                                       config.num_workers) for name, idx in index.items()}
        # Only a sample is decoded here; the rest of the unreadable files are found while streaming.
        sample, skipped = decode_sample(splits["train"].files, size, channels)
        mean, std = stats_of_sample(sample, channels)
    else:
        folder = config.dataset in FOLDER_DATASETS
        splits = {name: MemorySplit(images[torch.from_numpy(idx)], torch.from_numpy(labels[idx]),
                                    [files[i] for i in idx] if folder else None)
                  for name, idx in index.items()}
        mean, std = channel_stats(splits["train"].images)
    return Dataset(config.dataset, classes, splits, mean, std, skipped, streaming)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale."""
    if len(images) == 0:
        return [0.5] * images.shape[1], [0.25] * images.shape[1]
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(8192):
        values = chunk.to(torch.float64).div_(255).transpose(0, 1).flatten(1)
        total += values.sum(1)
        squares += (values * values).sum(1)
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def decode_sample(files: list[str], size: int, channels: int,
                  limit: int = 2000) -> tuple[list[np.ndarray], list[Refusal]]:
    """Up to `limit` files picked with a fixed seed, decoded: the images and the refusals among them."""
    rng = np.random.default_rng(0)
    picks = rng.choice(len(files), size=min(limit, len(files)), replace=False)
    decoded, refused = decode_files([files[i] for i in picks], size, channels)
    return [x for x in decoded if x is not None], refused


def stats_of_sample(images: list[np.ndarray], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a sample of images (for folders not held in memory)."""
    if not images:      # as channel_stats says for no images: a std of 0 would divide by zero
        return channel_stats(torch.zeros(0, channels, 1, 1, dtype=torch.uint8))
    return channel_stats(torch.from_numpy(np.stack(images)))


def count_split_sizes(config: RunConfig) -> dict[str, int]:
    """Split sizes without decoding a single image (for validating a config quickly)."""
    if config.dataset == "digits":
        per_class = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]   # sklearn's digits, per class
    elif config.dataset in STANDARD_SETS:
        # The official test split stays whole; val comes out of the training files, as in load_dataset.
        described = standard_sets.describe(config.dataset, standard_sets.data_root(config.data_path))
        sizes = {"train": 0, "val": 0, "test": len(described.test_labels)}
        for n in np.bincount(described.train_labels).tolist():
            n_train, n_val, _ = split_counts(n, config.val_fraction, 0.0)
            sizes["train"] += n_train
            sizes["val"] += n_val
        return sizes
    else:
        per_class = np.bincount(list_folder(config).labels).tolist()
    sizes = dict.fromkeys(SPLITS, 0)
    for n in per_class:
        for name, value in zip(SPLITS, split_counts(n, config.val_fraction, config.test_fraction)):
            sizes[name] += value
    return sizes


def check_data(config: RunConfig) -> list[str]:
    """Problems with the data a config names, found without decoding images."""
    try:
        sizes = count_split_sizes(config)
    except DatasetError as error:
        return [str(error)]
    except OSError as error:
        return [f"cannot read {SETTINGS['data_path'].label} {config.data_path}: {error.strerror or error}"]
    problems = []
    if isinstance(config.batch_size, int) and config.batch_size > sizes["train"]:   # auto: the probe keeps within
        problems.append(f"{SETTINGS['batch_size'].label} {config.batch_size} is larger than the training split "
                        f"({sizes['train']:,} samples)")
    if sizes["val"] == 0:
        problems.append(f"the validation split is empty: raise {SETTINGS['val_fraction'].label} or add images")
    return problems


def validate_run_config(config: RunConfig) -> list[str]:
    """Every problem with a config, its data included; [] means it can be launched."""
    problems = config.validate()
    # Listed beside the setting problems (a person fixes them all in one go); the data is looked at
    # only once the settings are right, since reading it needs them.
    if config.device != "cpu" and not torch.cuda.is_available():
        problems += (["device cuda was asked for, but no CUDA GPU is available"] if config.device == "cuda"
                     else config.cuda_only_problems("no CUDA GPU is available"))
    if not problems:
        problems = check_data(config)
        if config.pretrained and MODEL_SPECS[config.model].pretrainable:
            from core.models.pretrained import weights_problem
            problems += [problem] if (problem := weights_problem(config.model)) else []
    return problems


def class_count(config: RunConfig) -> int:
    """How many classes the data of a config has, without decoding images."""
    if config.dataset == "digits":
        return 10
    if config.dataset in STANDARD_SETS:
        return len(STANDARD_SETS[config.dataset].classes)
    return len(list_folder(config).classes)
