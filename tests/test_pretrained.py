"""ImageNet backbones: the weights file is found in the torch hub cache, loaded into all but the head,
kept frozen when asked; a missing, truncated or corrupt file is refused with its name. Offline: the
weights file is made here with torchvision's architecture under torchvision's file name."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from conftest import no_errors
from core.config import RunConfig
from core.data.folders import proposed_config
from pages.common.site import page_path

FILE = "resnet18-f37072fd.pth"      # torchvision's name for ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A resnet18 state dict in torchvision's layout, with values no fresh model would have."""
    import torchvision
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for _key, value in state.items():
        if value.is_floating_point():
            value.add_(torch.rand_like(value) * 0.01)    # running stats too: a fresh BN has 0 and 1
    path = tmp_path_factory.mktemp("weights") / FILE
    torch.save(state, path)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("TRAINBOARD_DOWNLOAD_WEIGHTS", raising=False)
    return home


@pytest.fixture
def cached(torch_home, weights_file):
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(weights_file, folder / FILE)
    return folder / FILE


def _train_args(image_folder, *sets):
    args = ["train", "--dataset", "image-folder", "--data", image_folder, "--model", "imagenet-resnet18",
            "--epochs", "1", "--batch-size", "8"]
    for item in ("image_size=32", "channels=1", "log_interval=2", "probe_interval=0", *sets):
        args += ["--set", item]
    return args


def test_a_frozen_backbone_keeps_the_files_weights_and_grayscale_feeds_three_channels(
        tmp_path, cli, cached, image_folder):
    from core.data.augment import BatchPreprocessor
    from core.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from core.runs.checkpoint import load_model
    runs = tmp_path / "runs"
    done = cli(*_train_args(image_folder, "freeze_backbone=true"), runs=runs)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    model, checkpoint = load_model(runs / run_id / "checkpoints" / "best.pt")
    original = torch.load(cached, weights_only=True)
    trained = checkpoint["model"]
    backbone = [key for key in original if not key.startswith("fc.")]
    assert all(torch.equal(trained[key], original[key]) for key in backbone)    # BN statistics included
    assert trained["fc.weight"].shape == (3, 512)                             # the new head, for 3 classes
    assert checkpoint["mean"] == list(IMAGENET_MEAN) and checkpoint["std"] == list(IMAGENET_STD)
    assert checkpoint["input_shape"] == [1, 32, 32]              # the data stays grayscale...
    inputs = BatchPreprocessor(checkpoint["mean"], checkpoint["std"])(
        torch.full((2, 1, 32, 32), 128, dtype=torch.uint8), train=False)
    assert inputs.shape == (2, 3, 32, 32)                        # ...and is repeated for the network
    assert model(inputs).shape == (2, 3)
    exported = cli("export", run_id, runs=runs)                  # ONNX reads what the network reads
    assert exported.returncode == 0, exported.stderr
    report = json.loads((runs / run_id / "export.json").read_text())
    assert report["input_shape"] == [3, 32, 32]
    assert max(report["parity_max_abs_diff"].values()) <= report["tolerance"]


def test_head_first_then_everything_with_a_lower_backbone_lr(cached, image_folder):
    from core.data.datasets import load_dataset
    from core.training.hooks import Callback
    from core.training.trainer import Trainer
    config = proposed_config("image-folder", data_path=str(image_folder), model="imagenet-resnet18",
                                   image_size=32, epochs=2, batch_size=8, finetune_head_epochs=1,
                                   backbone_lr_factor=0.1, scheduler="none", probe_interval=0)
    original = torch.load(cached, weights_only=True)

    class BackboneWatch(Callback):
        unchanged, rows = [], []

        def on_epoch_end(self, trainer, rows):
            state = trainer.model.state_dict()
            self.unchanged.append(all(torch.equal(state[k], original[k]) for k in original if not k.startswith("fc.")))
            self.rows.append(rows[0])

    trainer = Trainer(config, load_dataset(config), [BackboneWatch()])
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [config.lr, config.lr * 0.1]
    trainer.fit()
    assert BackboneWatch.unchanged == [True, False]
    # The metrics say which lr each part trained at: the backbone's only once it trains.
    head_only, everything = BackboneWatch.rows
    assert head_only["lr"] == config.lr and "backbone_lr" not in head_only
    assert everything["lr"] == config.lr and everything["backbone_lr"] == pytest.approx(config.lr * 0.1)


def test_a_missing_weights_file_is_rejected_naming_it_and_where_to_put_it(tmp_path, cli, torch_home, image_folder):
    runs = tmp_path / "runs"
    result = cli(*_train_args(image_folder), runs=runs)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    folder = torch_home / "hub" / "checkpoints"
    assert f"file {FILE}, not found in {folder}" in result.stderr
    assert f"https://download.pytorch.org/models/{FILE}" in result.stderr
    assert not runs.exists() or list(runs.iterdir()) == []
    # Without ImageNet weights nothing is looked for.
    fresh = cli(*_train_args(image_folder, "pretrained=false"), runs=runs)
    assert fresh.returncode == 0, fresh.stderr


def test_a_truncated_or_foreign_file_is_rejected_at_launch_and_a_torn_one_before_training(
        tmp_path, cli, cached, image_folder):
    runs = tmp_path / "runs"
    whole = cached.read_bytes()
    cached.write_bytes(whole[:len(whole) // 2])
    cut = cli(*_train_args(image_folder), runs=runs)
    assert cut.returncode == 2 and f"the ImageNet weights file {cached} is truncated" in cut.stderr
    assert not runs.exists() or list(runs.iterdir()) == []
    for foreign in (os.urandom(len(whole)), whole[:1000] + bytes(len(whole) - 1000)):   # the right size
        cached.write_bytes(foreign)
        refused = cli(*_train_args(image_folder), runs=runs)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"the ImageNet weights file {cached} is not a PyTorch weights file" in refused.stderr
        assert f"https://download.pytorch.org/models/{FILE}" in refused.stderr
        assert not runs.exists() or list(runs.iterdir()) == []
    # The archive's directory intact, a tensor's bytes torn: torch.load would read it (and train to
    # NaN); the archive's checksums find it at launch.
    torn = bytearray(whole)
    middle = len(torn) // 2
    torn[middle:middle + 4096] = os.urandom(4096)
    cached.write_bytes(bytes(torn))
    refused = cli(*_train_args(image_folder), runs=runs)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"the ImageNet weights file {cached} is corrupt (its entry" in refused.stderr
    assert not runs.exists() or list(runs.iterdir()) == []


def test_a_weights_file_torch_cannot_read_fails_the_run_with_its_name_not_torchs_advice(torch_home, monkeypatch):
    """Past the launch check (the file changed after it): the run fails naming the file, no traceback,
    and never with torch's advice to load it with weights_only=False."""
    import core.models.pretrained
    from core.models.pretrained import PretrainedWeightsError, load_imagenet_weights, weights_path
    from core.models.registry import build_model
    monkeypatch.setattr(core.models.pretrained, "TRUNCATED_BELOW", 0)     # a small file will do
    path = weights_path("imagenet-resnet18")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.zeros(2, 2), "hook": print}, path)   # code inside: the safe loader refuses
    with pytest.raises(PretrainedWeightsError) as caught:
        load_imagenet_weights("imagenet-resnet18", build_model("imagenet-resnet18", 3, 32, 32, 10))
    message = str(caught.value)
    assert (message.startswith(f"the ImageNet weights file {path} is corrupt or truncated")
            and "weights_only" not in message)


def test_bad_fine_tune_settings_are_rejected_with_their_reason():
    assert RunConfig.for_dataset("digits", model="imagenet-resnet18").image_size == 224    # its natural size
    assert RunConfig.for_dataset("digits", model="imagenet-resnet18", image_size=48).validate() == []
    small = RunConfig.for_dataset("digits", model="imagenet-resnet18", image_size=16).validate()
    assert small == ["image_size must be >= 32 for imagenet-resnet18 (its weights were trained at 224), got 16"]
    no_backbone = RunConfig.for_dataset("digits", freeze_backbone=True).validate()
    assert len(no_backbone) == 1 and no_backbone[0].startswith(
        "freeze_backbone needs a pretrained backbone, and simple-cnn has none (those with one: imagenet-resnet18")
    random = RunConfig.for_dataset("digits", model="imagenet-resnet18", pretrained=False, finetune_head_epochs=2)
    assert random.validate() == ["finetune_head_epochs needs pretrained=true: a random backbone would stay random"]
    never = RunConfig.for_dataset("digits", model="imagenet-resnet18", epochs=3, finetune_head_epochs=3)
    assert never.validate()[0].startswith("finetune_head_epochs must be < epochs (3)")


def test_model_page_counts_frozen_parameters_and_summarises_grayscale_input(app):
    app.run().switch_page(page_path("model")).run()
    app.number_input(key="ds_size_digits").set_value(32).run()
    app.selectbox(key="m_arch").set_value("imagenet-resnet18").run()
    app.checkbox(key="m_freeze").check().run()
    no_errors(app)
    assert not app.error, [e.value for e in app.error]
    counts = {m.label: int(m.value.replace(",", "")) for m in app.metric if m.label != "Size"}
    assert counts["Trainable"] == 512 * 10 + 10                       # the head for digits' 10 classes
    assert counts["Frozen"] == counts["Parameters"] - counts["Trainable"] > 11_000_000
    assert len(app.dataframe) == 2          # torchinfo read the 1-channel data as the 3 channels it becomes


def test_a_resume_does_not_read_the_weights_file_again(store, cached, image_folder, train):
    from test_trainer import AtStep
    config = proposed_config("image-folder", data_path=str(image_folder), model="imagenet-resnet18",
                                   image_size=32, epochs=2, batch_size=8, probe_interval=0)
    run_id = store.create_run(config)
    stop = AtStep(2, lambda t: store.stop_path(run_id).write_text("stop"))
    assert train(store, run_id, [stop]) == "stopped"
    cached.unlink()          # the checkpoint holds the weights now
    assert train(store, run_id) == "completed", store.read_status(run_id)["error"]
