"""The embedding projector's maths: features in 2-D by PCA (instant), t-SNE (openTSNE's FFT-accelerated
t-SNE: 16 s for 10,000 points here, against 38 s for scikit-learn's, bench/README.md) or UMAP
(umap-learn, when installed), each kept as a derived file of the checkpoint; and a point's nearest
neighbours in feature space. `python -m core.analysis.projection FOLDER` is the child that makes a
map for the Projector page (core.jobs.folder_job), with its progress.
"""
from __future__ import annotations

import importlib.util
import io
import sys
from typing import Callable

import numpy as np

from core.runs.derived import PROJECTIONS, embedding_files, projection_files

METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
INSTALL = {"tsne": "pip install opentsne", "umap": "pip install umap-learn"}
PCA_FIRST = 50           # t-SNE and UMAP run on the features' first 50 principal components (the usual step)
TSNE_ITERATIONS = 750    # openTSNE's default: 250 early exaggeration + 500 more
SEED = 0


def missing(method: str) -> str | None:
    """The pip command that installs what `method` needs, or None when it can run here."""
    module = {"tsne": "openTSNE", "umap": "umap"}.get(method)
    if module is None:
        return None
    spec = importlib.util.find_spec(module)
    # A leftover folder of an uninstalled package is found as a namespace package with no origin.
    return INSTALL[method] if spec is None or spec.origin is None else None


def _reduced(features: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA
    if features.shape[1] <= PCA_FIRST or len(features) <= PCA_FIRST:
        return features.astype(np.float32)
    return PCA(PCA_FIRST, random_state=SEED).fit_transform(features).astype(np.float32)


def project(features: np.ndarray, method: str, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """float32 [N, 2] coordinates of the features by `method` (one of PROJECTIONS); ValueError with the
    pip command when its library is not installed."""
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    if missing(method):
        raise ValueError(f"{METHOD_LABELS[method]} needs a library that is not installed here: {missing(method)}")
    progress = on_progress or (lambda done, total: None)
    if len(features) < 5:
        raise ValueError(f"{len(features)} point(s): too few to map")
    if method == "pca":
        from sklearn.decomposition import PCA
        coords = PCA(2, random_state=SEED).fit_transform(features)
    elif method == "tsne":
        from openTSNE import TSNE
        iterations = [0]

        def tick(iteration, error, embedding):
            iterations[0] += 10
            progress(min(iterations[0], TSNE_ITERATIONS), TSNE_ITERATIONS)
        perplexity = min(30.0, (len(features) - 1) / 3)
        coords = np.asarray(TSNE(perplexity=perplexity, n_jobs=-1, random_state=SEED, callbacks=tick,
                                 callbacks_every_iters=10).fit(_reduced(features)))
    else:
        import umap
        coords = umap.UMAP(n_neighbors=min(15, len(features) - 1), n_jobs=-1).fit_transform(_reduced(features))
    progress(1, 1)
    return np.asarray(coords, dtype=np.float32)


def embedding_map(store, run_id: str, checkpoint: str, split: str, method: str,
                  on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict, dict]:
    """(coords [N, 2], the embeddings' arrays, their record) of a run's checkpoint on a split by
    `method`: from the cache while the checkpoint is unchanged, else computed (the features too, when
    needed) and kept."""
    from core.analysis.embeddings import embeddings
    files = projection_files(store, run_id, checkpoint, split, method)    # refuses other methods and splits
    progress = on_progress or (lambda done, total, stage="": None)
    arrays, record = embeddings(store, run_id, checkpoint, split,
                           on_progress=lambda done, total: progress(done, total, "features"))
    identity = files.identity()
    if files.record() is not None:
        try:
            coords = np.load(files.path("coords"))
            if len(coords) == len(arrays["labels"]):
                return coords, arrays, record
        except (OSError, ValueError):
            pass        # a broken cache: made again
    coords = project(arrays["features"], method, lambda done, total: progress(done, total, METHOD_LABELS[method]))
    buffer = io.BytesIO()
    np.save(buffer, coords)
    files.write_bytes("coords", buffer.getvalue())
    files.write_record({"run_id": run_id, "checkpoint_name": checkpoint, "split": split, "method": method,
                        "points": len(coords)}, identity, files=["coords"])
    return coords, arrays, record


def cached_map(store, run_id: str, checkpoint: str, split: str, method: str) -> tuple[np.ndarray, dict, dict] | None:
    """What embedding_map would return, when all of it is in the cache and fresh; None otherwise (a page
    never computes: it starts the child that does)."""
    from core.analysis.embeddings import ARRAYS
    features, projected = embedding_files(store, run_id, checkpoint, split), \
        projection_files(store, run_id, checkpoint, split, method)
    record = features.record()
    if record is None or projected.record() is None:
        return None
    try:
        coords = np.load(projected.path("coords"))
        with np.load(features.path("arrays")) as cached:
            arrays = {name: cached[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError):
        return None
    return (coords, arrays, record) if len(coords) == len(arrays["labels"]) else None


def nearest(features: np.ndarray, row: int, k: int = 8) -> np.ndarray:
    """The rows of the k points nearest to `row` in feature space (cosine similarity), nearest first."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit[row]
    similarity[row] = -np.inf
    k = min(k, len(features) - 1)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-similarity, k - 1)[:k]
    return top[np.argsort(-similarity[top], kind="stable")]


def _map_job(payload: dict, on_progress) -> dict:
    from core.runs.store import RunStore
    store = RunStore(payload["runs"])
    coords, _, _ = embedding_map(store, payload["run_id"], payload["checkpoint"], payload["split"], payload["method"],
                              on_progress)
    return {"points": len(coords)}


if __name__ == "__main__":       # the child behind the Projector page (core.jobs.folder_job)
    from core.jobs.folder_job import run_folder_job
    run_folder_job(sys.argv[1:], _map_job)
