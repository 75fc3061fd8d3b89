"""Opening a 60,000-image folder on the Datasets page: list + sample statistics + one page of
thumbnails (core.data.browse), against decoding the whole folder first (core.data.datasets.load_dataset), which is
what a training run does and what a notebook would do to look at the data.

    .venv/bin/python bench/dataset_browse.py [--images 60000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.data.browse import view_dataset  # noqa: E402
from core.data.datasets import load_dataset  # noqa: E402


def make_folder(root: Path, images: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
    for i in range(images):
        pixels = rng.integers(0, 255, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(root / f"class{i % classes}" / f"{i}.png", compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=60_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        start = time.perf_counter()
        make_folder(root, args.images)
        print(f"made {args.images:,} 28x28 PNGs in {time.perf_counter() - start:.1f} s")
        config = RunConfig.for_dataset("image-folder", data_path=str(root), image_size=28, channels=1)
        start = time.perf_counter()
        view = view_dataset(config)
        opened = time.perf_counter() - start
        start = time.perf_counter()
        view.thumbnails(3, 100, 24)
        page = time.perf_counter() - start
        start = time.perf_counter()
        data = load_dataset(config)
        everything = time.perf_counter() - start
        assert sum(view.sizes.values()) == sum(len(s) for s in data.splits.values()) == args.images
    print(f"Datasets page: open the folder (list, counts, mean/std from 2,000 samples) {opened:6.2f} s")
    print(f"Datasets page: one page of 24 thumbnails                              {page * 1000:6.1f} ms")
    print(f"baseline: decode the whole folder (load_dataset)                       {everything:6.2f} s")
    print(f"ratio baseline/open = {everything / opened:.1f}x")


if __name__ == "__main__":
    main()
