"""The embedding projector's engine: a checkpoint's features and predictions kept as derived files,
their 2-D maps by PCA, t-SNE (openTSNE) and UMAP, nearest neighbours, and `python -m core embed`."""
import importlib.machinery
import os

import numpy as np
import pytest
import torch

from core.analysis import embeddings as embeddings_module
from core.analysis import projection
from core.analysis.embeddings import embeddings
from core.analysis.projection import cached_map, embedding_map, nearest, project
from core.runs.checkpoint import load_model
from core.runs.derived import embedding_files, projection_files


def test_features_and_predictions_are_the_models_and_are_kept_until_the_checkpoint_changes(store, trained,
                                                                                          monkeypatch):
    arrays, record = embeddings(store, trained, "best", "val")
    assert arrays["features"].shape == (record["points"], 512) and record["dimensions"] == 512   # simple-cnn
    assert arrays["probs"].shape == (record["points"], 10) and record["classes"] == [str(i) for i in range(10)]
    # The features are what the head reads: classifier.2's output; the probabilities the model's.
    model, checkpoint = load_model(store.checkpoint_path(trained, "best"))
    from core.config import read_config_values
    from core.data.augment import BatchPreprocessor
    from core.data.datasets import load_dataset
    part = load_dataset(read_config_values(checkpoint["config"])[0]).splits["val"]
    inputs = BatchPreprocessor(checkpoint["mean"], checkpoint["std"])(part.images[arrays["index"][:4]], train=False)
    with torch.inference_mode():
        expected = model.classifier[:3](model.features(inputs))
        probs = torch.softmax(model(inputs), 1)
    assert np.allclose(arrays["features"][:4], expected.numpy(), atol=1e-5)
    assert np.allclose(arrays["probs"][:4], probs.numpy(), atol=1e-5)

    def computed_again(*args, **kwargs):
        raise RuntimeError("computed again")
    monkeypatch.setattr(embeddings_module, "embed_split", computed_again)
    again, _ = embeddings(store, trained, "best", "val")          # from the run folder
    assert np.array_equal(again["features"], arrays["features"])
    best = store.checkpoint_path(trained, "best")
    later = best.stat().st_mtime_ns + 10**9
    os.utime(best, ns=(later, later))                              # a resume rewrites best.pt
    assert embedding_files(store, trained, "best", "val").record() is None        # stale now
    with pytest.raises(RuntimeError, match="computed again"):
        embeddings(store, trained, "best", "val")


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_each_map_is_2d_made_once_and_read_back(store, trained, method):
    assert cached_map(store, trained, "best", "val", method) is None
    coords, arrays, record = embedding_map(store, trained, "best", "val", method)
    assert coords.shape == (len(arrays["labels"]), 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    cached = cached_map(store, trained, "best", "val", method)
    assert cached is not None and np.array_equal(cached[0], coords) and cached[2] == record
    assert projection_files(store, trained, "best", "val", method).path("coords").name == f"{method}.npy"


def test_t_sne_keeps_neighbours_together():
    """Two well-separated clusters stay apart on the map."""
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (60, 20)), rng.normal(12, 1, (60, 20))]).astype(np.float32)
    coords = project(features, "tsne")
    first, second = coords[:60].mean(0), coords[60:].mean(0)
    spread = max(coords[:60].std(0).max(), coords[60:].std(0).max())
    assert np.linalg.norm(first - second) > 3 * spread


def test_a_method_that_is_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: None)
    assert projection.missing("umap") == "pip install umap-learn"
    assert projection.missing("tsne") == "pip install opentsne"
    assert projection.missing("pca") is None
    with pytest.raises(ValueError, match="UMAP needs a library that is not installed here: pip install umap-learn"):
        project(np.zeros((10, 4), np.float32), "umap")


def test_a_leftover_folder_of_an_uninstalled_library_counts_as_missing(monkeypatch):
    # `pip uninstall` can leave an empty umap/ folder, which Python finds as a namespace package.
    leftover = importlib.machinery.ModuleSpec("umap", None, is_package=True)
    monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: leftover)
    assert leftover.origin is None
    assert projection.missing("umap") == "pip install umap-learn"


def test_nearest_neighbours_are_by_cosine_similarity_nearest_first():
    features = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [0.5, 0.5]], np.float32)
    assert nearest(features, 0, 3).tolist() == [1, 4, 2]
    assert nearest(features, 0, 10).tolist() == [1, 4, 2, 3]     # never itself, at most the others


def test_core_embed_writes_the_arrays_and_refuses_bad_input(store, trained, cli, tmp_path, monkeypatch):
    out = tmp_path / "map.npz"
    result = cli("embed", trained, "--method", "tsne", "--out", out, runs=store.root)
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        assert set(saved.files) == {"features", "coords", "labels", "preds", "probs", "index", "classes"}
        assert saved["coords"].shape == (len(saved["labels"]), 2) and saved["classes"].tolist()[:2] == ["0", "1"]
        assert np.array_equal(saved["preds"], saved["probs"].argmax(1))
    assert f"wrote {out}" in result.stdout
    assert cli("embed", "no-such-run", runs=store.root).returncode == 2
    unwritable = cli("embed", trained, "--out", tmp_path / "missing" / "x.npz", runs=store.root)
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr

    monkeypatch.setattr(projection, "missing", lambda method: "pip install umap-learn" if method == "umap" else None)
    umap = cli("embed", trained, "--method", "umap", runs=store.root)
    assert umap.returncode == 2 and "pip install umap-learn" in umap.stderr

    from core.models import registry
    spec = registry.MODEL_SPECS["simple-cnn"]
    import dataclasses
    monkeypatch.setitem(registry.MODEL_SPECS, "simple-cnn", dataclasses.replace(spec, embedding=""))
    none = cli("embed", trained, "--split", "test", runs=store.root)
    assert none.returncode == 2 and "names no embedding layer" in none.stderr
    assert embedding_files(store, trained, "best", "test").read_record() is None        # nothing kept
