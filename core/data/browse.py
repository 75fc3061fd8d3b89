"""Looking at a dataset without training on it: summary figures and pages of thumbnails.

Folders are listed, not decoded: counts come from the file listing and mean/std from a sample,
so a 60,000-image folder opens in about the time it takes to list it. Thumbnails are decoded one
page at a time. Files that cannot be read are named with the reason, never a crash: those in the
sample (every file of a folder up to the sample's size), and those on the thumbnail page shown.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from core.config import FOLDER_DATASETS, RunConfig
from core.data.datasets import (
    SPLITS,
    Refusal,
    decode_file,
    decode_files,
    decode_sample,
    load_dataset,
    stats_of_sample,
    stratified_split,
)
from core.data.folders import list_folder
from core.data.images import ImageRefused


@dataclass
class ThumbnailPage:
    images: list[np.ndarray]              # uint8 [H, W] or [H, W, 3]; a blank square for a refused file
    refused: list[Refusal]                # the refused files of this page


@dataclass
class DatasetView:
    classes: list[str]
    counts: dict[str, list[int]]          # split -> samples per class
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    members: list[list]                   # class -> sample references (tensor rows or file paths)
    images: torch.Tensor | None = None    # all samples as uint8, for in-memory datasets
    size: int = 0
    channels: int = 1
    refused: list[Refusal] = field(default_factory=list)   # files found unreadable, with the reason
    checked: int = 0                      # how many files were decoded to find them
    left_out: list[Refusal] = field(default_factory=list)  # stray and non-image files, empty classes

    @property
    def sizes(self) -> dict[str, int]:
        return {split: sum(values) for split, values in self.counts.items()}

    def imbalance(self) -> float:
        """Largest class over smallest class, over all splits."""
        totals = np.sum([values for values in self.counts.values()], axis=0)
        return float(totals.max() / max(totals.min(), 1))

    def skipped(self) -> list[Refusal]:
        """Every file left out of training that is known so far: listed aside, or found unreadable."""
        return self.left_out + self.refused

    def skipped_title(self) -> str | None:
        """"N files left out of training: 2 cannot be read, 1 not an image file, ..." or None."""
        if not self.refused and not self.left_out:
            return None
        kinds = Counter(reason.split(" (")[0].split(":")[0] for _, reason in self.left_out)
        parts = ([f"{len(self.refused):,} cannot be read"] if self.refused else []) + \
            [f"{count:,} {kind}" for kind, count in kinds.items()]
        n = len(self.refused) + len(self.left_out)
        title = f"{n:,} file{'s' if n != 1 else ''} left out of training: " + ", ".join(parts)
        listed = sum(self.sizes.values())
        if self.refused and self.images is None and self.checked < listed:
            title += (f" (unreadable ones found in a sample of {self.checked:,} of the {listed:,} files; "
                      "training skips every such file)")
        return title

    def pages(self, class_index: int, per_page: int) -> int:
        return max(1, -(-len(self.members[class_index]) // per_page))

    def thumbnails(self, class_index: int, page: int, per_page: int) -> ThumbnailPage:
        """One page of one class; only this page is decoded."""
        refs = self.members[class_index][page * per_page:(page + 1) * per_page]
        refused = []
        if self.images is not None:
            arrays = [self.images[i].numpy() for i in refs]
        else:
            decoded, refused = decode_files(refs, self.size, self.channels)
            arrays = [a if a is not None else np.zeros((self.channels, self.size, self.size), np.uint8)
                      for a in decoded]
        return ThumbnailPage([a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0) for a in arrays], refused)

    def sample(self, class_index: int, index: int) -> torch.Tensor:
        """One sample as uint8 [C, H, W] (for the augmentation preview)."""
        ref = self.members[class_index][index]
        if self.images is not None:
            return self.images[ref]
        try:
            return torch.from_numpy(decode_file(ref, self.size, self.channels))
        except ImageRefused:
            return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8)


def view_dataset(config: RunConfig) -> DatasetView:
    """A DatasetView of the data a config names; raises DatasetError like load_dataset."""
    if config.dataset in FOLDER_DATASETS:
        listing = list_folder(config)
        classes, files, labels = listing.classes, listing.files, np.asarray(listing.labels)
        index = stratified_split(labels, config.val_fraction, config.test_fraction, config.seed)
        counts = {split: np.bincount(labels[index[split]], minlength=len(classes)).tolist() for split in SPLITS}
        sample, refused = decode_sample(files, config.image_size, config.channels)
        mean, std = stats_of_sample(sample, config.channels)
        members = [[files[i] for i in np.flatnonzero(labels == c)] for c in range(len(classes))]
        return DatasetView(classes, counts, (config.channels, config.image_size, config.image_size), mean, std,
                           members, None, config.image_size, config.channels, refused,
                           checked=len(sample) + len(refused), left_out=listing.left_out)
    data = load_dataset(config)
    images = torch.cat([data.splits[s].images for s in SPLITS])
    labels = torch.cat([data.splits[s].labels for s in SPLITS])
    members = [torch.nonzero(labels == c).flatten().tolist() for c in range(len(data.classes))]
    return DatasetView(data.classes, data.counts(), data.input_shape, data.mean, data.std, members, images,
                       config.image_size, config.channels, data.skipped,
                       checked=len(images) + len(data.skipped))

