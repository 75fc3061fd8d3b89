"""Looking at a dataset without training on it: summary figures and pages of thumbnails.

Folders are listed, not decoded: counts come from the file listing and mean/std from a sample,
so a 60,000-image folder opens in about the time it takes to list it. Thumbnails are decoded one
page at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.config import FOLDER_DATASETS, RunConfig
from core.data import (SPLITS, _decode_many, _list_folder, sampled_stats,
                       decode_file, load_dataset, stratified_split)



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

    @property
    def sizes(self) -> dict[str, int]:
        return {split: sum(values) for split, values in self.counts.items()}

    def imbalance(self) -> float:
        """Largest class over smallest class, over all splits."""
        totals = np.sum([values for values in self.counts.values()], axis=0)
        return float(totals.max() / max(totals.min(), 1))

    def pages(self, class_index: int, per_page: int) -> int:
        return max(1, -(-len(self.members[class_index]) // per_page))

    def thumbnails(self, class_index: int, page: int, per_page: int) -> list[np.ndarray]:
        """uint8 [H, W] or [H, W, 3] arrays for one page of one class; only this page is decoded."""
        refs = self.members[class_index][page * per_page:(page + 1) * per_page]
        if self.images is not None:
            arrays = [self.images[i].numpy() for i in refs]
        else:
            arrays = [a if a is not None else np.zeros((self.channels, self.size, self.size), np.uint8)
                      for a in _decode_many(refs, self.size, self.channels)]
        return [a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0) for a in arrays]

    def sample(self, class_index: int, index: int) -> torch.Tensor:
        """One sample as uint8 [C, H, W] (for the augmentation preview)."""
        ref = self.members[class_index][index]
        if self.images is not None:
            return self.images[ref]
        image = decode_file(ref, self.size, self.channels)
        return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8) if image is None \
            else torch.from_numpy(image)


def view_dataset(config: RunConfig) -> DatasetView:
    """A DatasetView of the data a config names; raises DatasetError like load_dataset."""
    if config.dataset in FOLDER_DATASETS:
        classes, files, labels = _list_folder(config)
        labels = np.asarray(labels)
        index = stratified_split(labels, config.val_fraction, config.test_fraction, config.seed)
        counts = {split: np.bincount(labels[index[split]], minlength=len(classes)).tolist() for split in SPLITS}
        mean, std = sampled_stats(files, config.image_size, config.channels)
        members = [[files[i] for i in np.flatnonzero(labels == c)] for c in range(len(classes))]
        return DatasetView(classes, counts, (config.channels, config.image_size, config.image_size), mean, std,
                           members, None, config.image_size, config.channels)
    data = load_dataset(config)
    images = torch.cat([data.splits[s].images for s in SPLITS])
    labels = torch.cat([data.splits[s].labels for s in SPLITS])
    members = [torch.nonzero(labels == c).flatten().tolist() for c in range(len(data.classes))]
    return DatasetView(data.classes, data.counts(), data.input_shape, data.mean, data.std, members, images,
                       config.image_size, config.channels)

