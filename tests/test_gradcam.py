"""Grad-CAM: the map points at what carries the class (a digit pasted into one quadrant of an empty
canvas), the traps are handled (inference mode, in-place ReLUs, eval mode), models without
convolutions say so, and `predict --explain DIR` writes the maps."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from core.data.augment import BatchPreprocessor
from core.data.folders import proposed_config
from core.models.gradcam import CannotExplain, grad_cam, mass_in
from core.models.registry import build_model
from core.runs.checkpoint import load_model

QUADRANTS = ((0, 0), (0, 16), (16, 0), (16, 16))


def canvas(digit: np.ndarray, quadrant: int) -> np.ndarray:
    """A 32x32 black canvas with an 8x8 scikit-learn digit, enlarged to 16x16, in one quadrant."""
    small = np.asarray(Image.fromarray((digit * 16).clip(0, 255).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
    image = np.zeros((32, 32), np.uint8)
    top, left = QUADRANTS[quadrant]
    image[top:top + 16, left:left + 16] = small
    return image


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory, train):
    """simple-cnn trained on digits pasted into each quadrant of a canvas (21 s here)."""
    from core.runs.store import RunStore
    digits = load_digits()
    root = tmp_path_factory.mktemp("quadrants") / "images"
    for i in range(1300):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        for quadrant in range(4):
            Image.fromarray(canvas(digits.images[i], quadrant)).save(folder / f"{i}-{quadrant}.png")
    store = RunStore(root.parent / "runs")
    run_id = store.create_run(proposed_config("image-folder", data_path=str(root), image_size=32, channels=1,
                                              epochs=6, batch_size=64))
    assert train(store, run_id) == "completed"
    return store, run_id, digits


def test_the_map_points_at_the_quadrant_that_holds_the_digit(quadrant_model):
    store, run_id, digits = quadrant_model
    model, checkpoint = load_model(store.checkpoint_path(run_id, "best"))
    prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"])
    masses = []
    for i in range(1300, 1330):                       # digits the model never saw
        for quadrant in range(4):
            inputs = prep(torch.from_numpy(canvas(digits.images[i], quadrant))[None, None], train=False)
            target = checkpoint["classes"].index(str(digits.target[i]))
            explanation = grad_cam(model, "simple-cnn", inputs, target=target)
            top, left = QUADRANTS[quadrant]
            masses.append(mass_in(explanation.heatmap, slice(top, top + 16), slice(left, left + 16)))
    masses = np.array(masses)
    # A map that ignored the digit would put a quarter of its mass in its quadrant.
    assert np.median(masses) > 0.6 and (masses > 0.5).mean() > 0.8, np.round(masses, 2)


def test_the_traps_inference_mode_in_place_relus_and_eval_mode():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 32, 32, 5).train()
    assert any(getattr(m, "inplace", False) for m in model.modules())
    with torch.inference_mode():                       # where a caller may well be: no gradients recorded
        explanation = grad_cam(model, "resnet18", torch.randn(1, 3, 32, 32), target=2)
    assert explanation.heatmap.shape == (32, 32) and explanation.target == 2 and explanation.layer == "layer4"
    assert 0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1
    assert model.training                              # put back as it was
    assert any(getattr(m, "inplace", False) for m in model.modules())      # and its ReLUs in place again
    assert explanation.probs.shape == (5,) and abs(explanation.probs.sum() - 1) < 1e-5


def test_models_without_convolutions_and_unknown_layers_say_so():
    with pytest.raises(CannotExplain, match="mlp has no convolutional layer: Grad-CAM needs one"):
        grad_cam(build_model("mlp", 1, 8, 8, 10), "mlp", torch.randn(1, 1, 8, 8))
    with pytest.raises(CannotExplain, match="no layer 'layer9'.*its feature layers: layer1, layer2, layer3, layer4"):
        grad_cam(build_model("resnet18", 3, 32, 32, 5), "resnet18", torch.randn(1, 3, 32, 32), layer="layer9")
    with pytest.raises(CannotExplain, match="class 7 does not exist: the model has 5 classes"):
        grad_cam(build_model("resnet18", 3, 32, 32, 5), "resnet18", torch.randn(1, 3, 32, 32), target=7)
    with pytest.raises(CannotExplain, match="gives no spatial map"):
        grad_cam(build_model("simple-cnn", 1, 16, 16, 10), "simple-cnn", torch.randn(1, 1, 16, 16),
                 layer="classifier.2")


def test_predict_explain_writes_a_map_per_file_and_names_it(quadrant_model, tmp_path, cli):
    store, run_id, digits = quadrant_model
    files = []
    for quadrant in range(2):
        files.append(tmp_path / f"q{quadrant}" / "digit.png")       # the same name twice
        files[-1].parent.mkdir()
        Image.fromarray(canvas(digits.images[1400], quadrant)).save(files[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    maps = tmp_path / "maps"
    result = cli("predict", run_id, *files, tmp_path / "broken.png", "--explain", maps, "--backend", "onnx",
                 runs=store.root)
    assert result.returncode == 3, result.stderr                     # the broken file refused, the rest done
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("explanation") for line in lines] == [str(maps / "digit.gradcam.png"),
                                                           str(maps / "digit-2.gradcam.png"), None]
    assert "error" in lines[2] and lines[0]["explained_class"] == lines[0]["top_k"][0]["class"]
    image = np.asarray(Image.open(maps / "digit.gradcam.png"))
    assert image.shape == (256, 256, 3)                               # 32 pixels shown 8 times larger


def test_predict_explain_on_a_model_without_convolutions_says_why(store, tmp_path, cli, train):
    from conftest import tiny_digits
    run_id = store.create_run(tiny_digits(model="mlp", epochs=1))
    assert train(store, run_id) == "completed"
    Image.fromarray(np.full((8, 8), 120, np.uint8)).save(tmp_path / "flat.png")
    result = cli("predict", run_id, tmp_path / "flat.png", "--explain", tmp_path / "maps", runs=store.root)
    assert result.returncode == 0
    line = json.loads(result.stdout)
    assert line["explanation_error"].startswith("mlp has no convolutional layer") and "top_k" in line
    assert list((tmp_path / "maps").iterdir()) == []
