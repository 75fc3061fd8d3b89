"""Shared fixtures: a fresh run store per test and small image data made on the spot."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item, so a fixture can tell that its test failed."""
    outcome = yield
    setattr(item, f"report_{call.when}", outcome.get_result())


@pytest.fixture
def store(tmp_path):
    from core.runs.store import RunStore
    return RunStore(tmp_path / "runs")


@pytest.fixture
def trained(store):
    """The id of a finished two-epoch digits run in `store`."""
    from core.training.worker import run_training
    run_id = store.create_run(tiny_digits(epochs=2))
    assert run_training(store, run_id, handle_signals=False) == "completed"
    return run_id


def write_png(path: Path, value: int, size=(12, 12), mode="RGB") -> None:
    from PIL import Image
    rng = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    noise = rng.integers(0, 40, shape, dtype=np.uint8)
    Image.fromarray((noise + value).astype(np.uint8), mode).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """root/<class>/*.png: three classes told apart by brightness, one image of a different size."""
    root = tmp_path / "images"
    for label, value in (("dark", 10), ("mid", 100), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            write_png(root / label / f"{i}.png", value + i % 5, size=(12, 12) if i else (20, 16))
    return root


@pytest.fixture
def csv_folder(tmp_path) -> Path:
    root = tmp_path / "csvdata"
    (root / "img").mkdir(parents=True)
    rows = [("filename", "label")]
    for label, value in (("cat", 20), ("dog", 180)):
        for i in range(10):
            name = f"img/{label}{i}.png"
            write_png(root / name, value + i)
            rows.append((name, label))
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return root


def tiny_digits(**overrides):
    """A digits config that trains in about a second on 2 cores."""
    from core.config import RunConfig
    values = dict(image_size=8, epochs=2, batch_size=64, log_interval=5)
    values.update(overrides)
    return RunConfig.for_dataset("digits", **values)


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """`python -m core ARGS --runs RUNS`, run in this process through core.__main__.main."""
    from core.__main__ import main

    def run(*args, runs) -> CliResult:
        capsys.readouterr()
        code = main([*map(str, args), "--runs", str(runs)])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)
    return run
