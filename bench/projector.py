"""The projector's costs, each against the plain approach measured in the same run:

1. features of 10,000 digits-sized images (1x16x16, simple-cnn): core.analysis.embeddings'
   features_and_probs (batches of 512, a forward hook, inference mode) against a loop of one image
   at a time, as a notebook would (target: under 5 s);
2. t-SNE of 10,000 points (512 features, PCA to 50 first, as the projector does): openTSNE, which the
   projector uses, against scikit-learn's TSNE (target: under 30 s); UMAP when umap-learn is installed,
   in a fresh process (its numba compilation counts: a user pays it);
3. Grad-CAM of one image against one forward and backward pass of the same model (target: under 3x);
4. with Debian's Fashion-MNIST (dataset-fashion-mnist) and --browser: the Projector page's map of a
   10,000-point test split redrawn after a colour change, in headless Chromium (target: under 1 s),
   and PCA of the 50,000-point train split.

    .venv/bin/python bench/projector.py [--browser] [--fashion DIR]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.analysis.embeddings import features_and_probs  # noqa: E402
from core.analysis.projection import project  # noqa: E402
from core.data.augment import BatchPreprocessor  # noqa: E402
from core.models.gradcam import grad_cam  # noqa: E402
from core.models.registry import build_model  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


def timed(work, repeats: int = 1) -> float:
    """The median seconds of `repeats` runs of work()."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def features() -> None:
    torch.manual_seed(0)
    model = build_model("simple-cnn", 1, 16, 16, 10).eval()
    images = torch.randint(0, 256, (10_000, 1, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 10, (10_000,))
    prep = BatchPreprocessor([0.3], [0.3])

    def ours():
        batches = ((prep(images[i:i + 512], train=False), labels[i:i + 512], torch.arange(i, min(i + 512, 10_000)))
                   for i in range(0, 10_000, 512))
        features_and_probs(model, "classifier.2", batches, 10_000)

    def one_at_a_time():
        captured = []
        hook = model.classifier[2].register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
        with torch.no_grad():
            for i in range(10_000):
                model(prep(images[i:i + 1], train=False))
        hook.remove()
    ours_s, plain_s = timed(ours, 3), timed(one_at_a_time, 1)
    print(f"features of 10,000 1x16x16 images (simple-cnn): {ours_s:.2f} s batched, {plain_s:.2f} s one at a time: "
          f"{plain_s / ours_s:.1f}x faster (target: under 5 s)")


def maps() -> None:
    from sklearn.datasets import make_blobs
    from sklearn.manifold import TSNE
    points, _ = make_blobs(n_samples=10_000, n_features=512, centers=10, cluster_std=8.0, random_state=0)
    points = points.astype(np.float32)
    pca = timed(lambda: project(points, "pca"), 3)
    ours = timed(lambda: project(points, "tsne"))
    from sklearn.decomposition import PCA
    reduced = PCA(50, random_state=0).fit_transform(points)
    sklearn = timed(lambda: TSNE(2, random_state=0, n_jobs=-1, init="pca").fit_transform(reduced))
    print(f"10,000 points x 512: PCA {pca:.2f} s; t-SNE openTSNE {ours:.1f} s (the projector's), scikit-learn "
          f"{sklearn:.1f} s: {sklearn / ours:.1f}x faster (target: under 30 s)")
    from core.analysis.projection import missing
    if missing("umap"):
        print(f"UMAP: not installed ({missing('umap')})")
        return
    script = ("import time, numpy as np; from sklearn.datasets import make_blobs; import sys; "
              f"sys.path.insert(0, {str(ROOT)!r}); from core.analysis.projection import project; "
              "x, _ = make_blobs(n_samples=10000, n_features=512, centers=10, cluster_std=8.0, random_state=0); "
              "t = time.perf_counter(); project(x.astype(np.float32), 'umap'); print(time.perf_counter() - t)")
    fresh = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.split()[-1])
    print(f"UMAP (umap-learn) in a fresh process, numba's compiling included: {fresh:.1f} s")


def forward_backward(model: torch.nn.Module, image: torch.Tensor) -> None:
    inputs = image.clone().requires_grad_(True)
    model(inputs)[0, 3].backward()
    model.zero_grad(set_to_none=True)


def gradcam() -> None:
    for name, shape in (("simple-cnn", (1, 32, 32)), ("resnet18", (3, 32, 32)), ("imagenet-resnet18", (3, 224, 224))):
        torch.manual_seed(0)
        model = build_model(name, *shape, 10).eval()
        image = torch.randn(1, *shape)
        grad_cam(model, name, image, target=3)          # warm-up (captum's import, first allocations)
        plain = timed(lambda m=model, x=image: forward_backward(m, x), 20)
        ours = timed(lambda m=model, n=name, x=image: grad_cam(m, n, x, target=3), 20)
        print(f"Grad-CAM, {name} at {shape[1]}x{shape[2]}: {ours * 1000:.1f} ms against {plain * 1000:.1f} ms for a "
              f"forward and backward pass: {ours / plain:.2f}x (target: under 3x)")


def browser(fashion: Path) -> None:
    """A Fashion-MNIST run, its test split (10,000) by PCA on the Projector page, a colour change timed
    in Chromium; and PCA of its train split (50,000)."""
    import os
    import tempfile

    from playwright.sync_api import sync_playwright

    from core.analysis.projection import embedding_map
    from core.config import RunConfig
    from core.runs.store import RunStore
    from core.training.worker import run_training
    runs = Path(tempfile.mkdtemp(prefix="trainboard-bench-")) / "runs"
    store = RunStore(runs)
    run_id = store.create_run(RunConfig.for_dataset("fashion-mnist", data_path=str(fashion), epochs=1, name="bench"))
    assert run_training(store, run_id, handle_signals=False) == "completed"
    started = time.perf_counter()
    embedding_map(store, run_id, "best", "test", "pca")
    print(f"Fashion-MNIST test split, 10,000 points: features and PCA {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    coords, _, _ = embedding_map(store, run_id, "best", "train", "pca")
    print(f"Fashion-MNIST train split, {len(coords):,} points: features and PCA {time.perf_counter() - started:.1f} s")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", "8799"],
                              cwd=ROOT, env=dict(os.environ, TRAINBOARD_RUNS=str(runs)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(8)
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                  args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                                        "--disable-background-networking"])
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            for split, points in (("test", "10,000"), ("train", "50,000")):
                page.goto(f"http://127.0.0.1:8799/projector?run={run_id}")
                page.get_by_text(split, exact=True).click()
                page.get_by_text(f"samples of {split}").wait_for(timeout=120_000)
                page.wait_for_timeout(2000)
                redraws = []
                for colour in ("predicted class", "confidence", "correct or not", "true class"):
                    started = time.perf_counter()
                    page.get_by_role("combobox", name="Colour by").click()
                    page.get_by_role("option", name=colour, exact=True).click()
                    # The map's legend (or colour bar) is titled by its colouring: plotly draws it with the points.
                    page.wait_for_function("c => [...document.querySelectorAll('.js-plotly-plot text')]"
                                           ".some(t => t.textContent === c)", arg=colour, timeout=60_000)
                    redraws.append(time.perf_counter() - started)
                    page.wait_for_timeout(1500)
                print(f"Projector page, {points} points: a colour change redrawn in "
                      f"{', '.join(f'{s:.2f}' for s in redraws)} s (median {statistics.median(redraws):.2f} s; "
                      "target: under 1 s; from the click on the colour to the new map's legend or colour bar drawn)")
            chromium.close()
    finally:
        os.killpg(server.pid, 15)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--browser-only", action="store_true")
    parser.add_argument("--fashion", type=Path, default=FASHION)
    args = parser.parse_args()
    cores = subprocess.check_output(["nproc"]).decode().strip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cores} cores")
    if not args.browser_only:
        features()
        maps()
        gradcam()
    if args.browser or args.browser_only:
        if any((args.fashion / name).exists() for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
            browser(args.fashion)
        else:
            print(f"no Fashion-MNIST in {args.fashion}: the page's timings need it (apt install dataset-fashion-mnist)")
