"""The GPU path, tested without a GPU: what each setting resolves to on the CPU, validation of the
CUDA-only settings, gradient accumulation, the batch-size probe (a pure function driven by a fake
measurement), compiled training saving the plain module, and out-of-memory handling (the error
injected into the training step). bench/gpu_train.py measures the same path on a GPU."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import no_errors, tiny_digits
from core.config import RECIPES, RunConfig, read_config_values
from core.data.datasets import load_dataset, validate_run_config
from core.runs.checkpoint import load_checkpoint, load_model
from core.training.accelerator import compile_mode, resolve_precision
from core.training.batch_size import BatchTooLarge, find_batch_size, largest_fitting_batch
from core.training.optimizers import scaled_lr
from core.training.trainer import Trainer, micro_batches
from pages.common.site import page_path

CPU = torch.device("cpu")


def test_mixed_precision_auto_is_the_default_and_off_on_cpu():
    assert RunConfig().mixed_precision == "auto"
    assert resolve_precision("auto", CPU) is None and resolve_precision("off", CPU) is None
    with pytest.raises(RuntimeError, match="mixed_precision bf16 needs a CUDA GPU"):
        resolve_precision("bf16", CPU)
    config = tiny_digits(epochs=1)
    trainer = Trainer(config, load_dataset(config), device=CPU)
    setup = trainer.setup()
    assert not trainer.amp and not trainer.scaler.is_enabled()
    assert (setup["precision"], setup["channels_last"], setup["fused_optimizer"], setup["compile"]) == \
        ("off", False, False, None)
    # Older config files said true/false.
    assert read_config_values({"mixed_precision": True})[0].mixed_precision == "auto"
    assert read_config_values({"mixed_precision": False})[0].mixed_precision == "off"


def test_cuda_only_settings_are_rejected_on_cpu_with_their_reason():
    problems = RunConfig(batch_size="auto", mixed_precision="bf16", compile="reduce-overhead",
                         device="cpu").validate()
    assert problems == [
        "batch_size auto needs a CUDA GPU (it probes the GPU's memory and speed), and device is cpu: "
        "choose a number, e.g. 64",
        "mixed_precision bf16 needs a CUDA GPU, and device is cpu: choose auto or off",
        "compile reduce-overhead records CUDA graphs, which need a CUDA GPU, and device is cpu: "
        "choose default, auto or off"]
    assert RunConfig(compile="default", device="cpu").validate() == []      # a person may still ask
    assert RunConfig(accumulate_steps=0).validate() == ["accumulate_steps must be >= 1, got 0"]
    assert RunConfig(batch_size="big").validate() == ["batch_size must be an integer or auto, got 'big'"]
    if not torch.cuda.is_available():      # device auto on a machine without CUDA: found at launch
        assert validate_run_config(RunConfig(batch_size="auto"))[0].startswith(
            "batch_size auto needs a CUDA GPU (it probes the GPU's memory and speed), and no CUDA GPU is available")
        # Every problem at once, the CUDA ones beside the settings' own.
        both = validate_run_config(RunConfig(batch_size="auto", accumulate_steps=0))
        assert both[0] == "accumulate_steps must be >= 1, got 0" and both[1].startswith("batch_size auto needs")


@pytest.mark.skipif(torch.cuda.is_available(), reason="batch_size auto is allowed where CUDA is")
@pytest.mark.parametrize("setting, reason", [("batch_size=auto", "batch_size auto needs a CUDA GPU"),
                                             ("accumulate_steps=0", "accumulate_steps must be >= 1, got 0")])
def test_the_cli_rejects_them_and_writes_nothing(tmp_path, cli, setting, reason):
    runs = tmp_path / "runs"
    result = cli("train", "--dataset", "digits", "--set", setting, runs=runs)
    assert result.returncode == 2 and reason in result.stderr and "Traceback" not in result.stderr
    assert not runs.exists() or [p for p in runs.iterdir() if not p.name.startswith(".")] == []


def _one_step(batch_size: int, accumulate_steps: int, samples: int = 32):
    """Weights after one SGD step on the first `samples` samples, on an MLP without dropout at work."""
    config = tiny_digits(epochs=1, model="mlp", batch_size=batch_size, accumulate_steps=accumulate_steps,
                         optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=1e-3)
    trainer = Trainer(config, load_dataset(config), device=CPU)
    trainer.model.eval()        # dropout off: the only randomness of this network
    split = trainer.train_split
    loss, correct = trainer.train_step((split.images[:samples], split.labels[:samples]))
    return loss, correct, [p.detach().clone() for p in trainer.model.parameters()]


def test_accumulating_two_batches_of_16_is_one_step_of_32():
    loss, correct, weights = _one_step(32, 1)
    loss2, correct2, weights2 = _one_step(16, 2)
    assert torch.allclose(loss, loss2, atol=1e-6) and int(correct) == int(correct2)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights, weights2))
    moved = _one_step(16, 1, samples=16)[2]          # a step on half the samples: another result
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights, moved))
    assert micro_batches(33, 16) == [slice(0, 16), slice(16, 33)]     # never a lone sample for BatchNorm
    assert micro_batches(32, 16) == [slice(0, 16), slice(16, 32)]


def test_a_run_with_accumulation_counts_optimizer_steps(store, train):
    run_id = store.create_run(tiny_digits(epochs=1, batch_size=16, accumulate_steps=4))
    assert train(store, run_id) == "completed"
    status = store.read_status(run_id)
    train = len(load_dataset(tiny_digits()).splits["train"])
    assert status["steps_per_epoch"] == -(-train // 64)
    assert (status["setup"]["batch_size"], status["setup"]["effective_batch"]) == (16, 64)


# --- the batch-size probe --------------------------------------------------------------------------
def fake_gpu(memory_limit: int, rates: dict[int, float]):
    """A measure(b): None above memory_limit, else the rate from `rates` (the last one beyond it)."""
    asked = []

    def measure(batch):
        asked.append(batch)
        return None if batch > memory_limit else rates.get(batch, max(rates.values()))
    return measure, asked


def test_the_probe_takes_the_smallest_batch_near_peak_throughput():
    # resnet18 at 28x28 on an H100 (shared/notes/gpu.md): 10k at 128, 45.6k at 512, 72.2k at 2048.
    rates = {64: 5e3, 128: 10e3, 256: 22e3, 512: 45.6e3, 1024: 62e3, 2048: 72.2e3, 4096: 75e3}
    measure, asked = fake_gpu(16384, rates)
    chosen, trials = find_batch_size(measure, start=64, limit=6000)
    assert chosen == 2048
    assert asked == [64, 128, 256, 512, 1024, 2048, 4096]       # 4096 gained < 10%: stop there
    assert trials[-1] == {"batch_size": 4096, "samples_per_s": 75e3}
    assert rates[chosen] >= 4 * rates[128]


def test_the_probe_stops_at_memory_and_at_its_limit_and_halves_a_start_that_does_not_fit():
    measure, asked = fake_gpu(300, {b: float(b) for b in (16, 32, 64, 128, 256)})
    assert find_batch_size(measure, start=64)[0] == 256 and asked[-1] == 512      # 512 did not fit
    measure, asked = fake_gpu(10_000, {b: float(b) for b in (64, 128, 256)})
    assert find_batch_size(measure, start=64, limit=200)[0] == 128 and max(asked) == 128
    measure, asked = fake_gpu(40, {b: float(b) for b in (16, 32, 64)})
    assert find_batch_size(measure, start=64)[0] == 32 and asked == [64, 32]       # no growing after
    with pytest.raises(BatchTooLarge, match="not even a batch of 1 fits"):
        find_batch_size(fake_gpu(0, {1: 1.0})[0], start=8)
    assert largest_fitting_batch(fake_gpu(100, {1: 1.0})[0], below=512) == 64
    assert largest_fitting_batch(fake_gpu(0, {1: 1.0})[0], below=8) is None


def test_the_lr_follows_the_batch_found():
    config = RunConfig(lr=0.1, optimizer="sgd", lr_reference_batch=128)
    assert scaled_lr(config, 512) == pytest.approx(0.4)               # linear for sgd
    assert scaled_lr(RunConfig(lr=1e-3, optimizer="adamw", lr_reference_batch=128), 512) == pytest.approx(2e-3)


@pytest.fixture
def fake_probe(monkeypatch):
    """batch_size auto on the CPU: the probe's measurement is faked (fits up to 64, each doubling
    faster), the device check let through."""
    import core.training.batch_size
    monkeypatch.setattr(core.training.batch_size, "probe_supported", lambda device: True)
    monkeypatch.setattr(core.training.batch_size, "measure_batch", lambda trainer, b: None if b > 64 else float(b))


def out_of_memory_above(monkeypatch, limit: int):
    """Trainer.train_step raises CUDA's out-of-memory error for batches above `limit`."""
    step = Trainer.train_step

    def train_step(self, batch):
        if len(batch[1]) > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(batch[1])} MiB")
        return step(self, batch)
    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_batch_auto_records_its_probe_scales_the_lr_and_retries_smaller_on_oom(store, fake_probe,
                                                                              monkeypatch, capfd, train):
    out_of_memory_above(monkeypatch, 32)         # the probe said 64 fits; training finds it does not
    config = tiny_digits(epochs=1, batch_size="auto", optimizer="sgd", lr=0.1, lr_reference_batch=128)
    run_id = store.create_run(config)
    assert store.summary(run_id).batch_size is None          # the runs table's number: not known yet
    assert train(store, run_id) == "completed"
    assert store.summary(run_id).batch_size == 32
    status = store.read_status(run_id)
    assert status["batch_probe"]["chosen"] == 64
    assert [t["batch_size"] for t in status["batch_probe"]["trials"]] == [64, 128]
    assert status["batch_retries"] == [{"batch_size": 64, "step": 0}]
    assert status["setup"]["batch_size"] == 32 and status["setup"]["lr"] == pytest.approx(0.1 * 32 / 128)
    assert "Traceback" not in capfd.readouterr().err
    assert load_checkpoint(store.checkpoint_path(run_id, "latest"))["batch_size"] == 32


def test_a_resumed_auto_run_keeps_its_batch_size(store, fake_probe, monkeypatch, train):
    from test_trainer import AtStep
    run_id = store.create_run(tiny_digits(epochs=2, batch_size="auto"))
    stop = AtStep(3, lambda t: store.stop_path(run_id).write_text("stop"))
    assert train(store, run_id, [stop]) == "stopped"
    import core.training.batch_size
    monkeypatch.setattr(core.training.batch_size, "measure_batch", lambda trainer, b: float(b))   # would now say more
    assert train(store, run_id) == "completed"
    assert store.read_status(run_id)["setup"]["batch_size"] == 64


def test_out_of_memory_fails_the_run_naming_the_batch_and_one_that_fits(store, monkeypatch, capfd, train):
    out_of_memory_above(monkeypatch, 16)
    run_id = store.create_run(tiny_digits(epochs=1, batch_size=64))
    assert train(store, run_id) == "failed"
    status = store.read_status(run_id)
    assert status["error"].startswith("CUDA ran out of memory at batch_size 64 (simple-cnn at 8x8, step 0): "
                                      "batch_size 16 fits (measured just now)")
    assert "batch_size 16 and accumulate_steps 4 for the same 64 samples per step" in status["error"]
    assert status["out_of_memory"] == {"batch_size": 64, "fits": 16}
    assert "Traceback" not in capfd.readouterr().err     # the reason is in status.json, for the caller to say
    assert not store.checkpoint_path(run_id, "latest").exists()


# --- compile ---------------------------------------------------------------------------------------
def test_compile_auto_compiles_on_cuda_only():
    cuda = torch.device("cuda")
    assert compile_mode("auto", CPU, 10_000, 64) is None       # compiling costs a CPU more than it gains
    assert compile_mode("default", CPU, 10_000, 64) == "default"
    assert compile_mode("off", cuda, 10_000, 64) is None
    assert compile_mode("auto", cuda, 11_000_000, 128) == "reduce-overhead"   # resnet18: launch-bound
    assert compile_mode("auto", cuda, 11_000_000, 2048) == "default"
    assert compile_mode("auto", cuda, 90_000_000, 128) == "default"


def test_a_compiled_run_saves_the_plain_modules_weights(store, monkeypatch, train):
    import core.training.accelerator
    monkeypatch.setattr(core.training.accelerator, "COMPILE_BACKEND", "eager")    # dynamo's wrapping, no compiler
    run_id = store.create_run(tiny_digits(epochs=1, compile="default", probe_interval=0))
    assert train(store, run_id) == "completed"
    assert store.read_status(run_id)["setup"]["compile"] == "default"
    for name in ("best", "latest"):
        keys = list(load_checkpoint(store.checkpoint_path(run_id, name))["model"])
        assert keys and not any(key.startswith(("_orig_mod.", "module.")) for key in keys), keys[:3]
    model, _ = load_model(store.checkpoint_path(run_id, "best"))
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


# --- the fast recipe and test-time flips ----------------------------------------------------------------
def test_the_fast_recipe_is_a_valid_config_of_the_measured_settings():
    config = RECIPES["fast"].config()
    assert config.validate() == []
    assert (config.dataset, config.model, config.batch_size, config.epochs, config.optimizer, config.lr,
            config.scheduler, config.warmup_fraction, config.label_smoothing, config.crop_padding,
            config.tta_flip) == ("fashion-mnist", "resnet18", 512, 30, "sgd", 0.4, "onecycle", 0.25, 0.1, 2, True)
    written = json.loads(config.to_json())
    assert written["momentum"] == 0.9 and written["weight_decay"] == 5e-4


def test_the_onecycle_warm_up_share_is_the_settings():
    config = tiny_digits(epochs=2, scheduler="onecycle", warmup_fraction=0.25, optimizer="sgd", lr=0.4)
    trainer = Trainer(config, load_dataset(config), device=CPU)
    peak = round(0.25 * trainer.state.total_steps) - 1
    lrs = []
    for _ in range(trainer.state.total_steps):
        lrs.append(trainer.lr)
        trainer.optimizer.step()
        trainer.scheduler.step()
    assert max(range(len(lrs)), key=lrs.__getitem__) == peak and max(lrs) == pytest.approx(0.4)


def test_a_short_onecycle_never_divides_by_zero():
    from core.training.optimizers import make_scheduler
    for total in range(1, 12):         # 25% of 4 steps ended torch's warm-up on step 0
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
        scheduler, _ = make_scheduler(RunConfig(scheduler="onecycle", warmup_fraction=0.25, epochs=1),
                                      optimizer, total)
        for _ in range(total - 1):
            optimizer.step()
            scheduler.step()
            assert 0 < optimizer.param_groups[0]["lr"] <= 0.4


def test_test_time_flip_averages_an_image_and_its_mirror():
    from core.data.augment import predict_logits
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.rand(5, 1, 4, 4)
    both = predict_logits(model, images, flip=True)
    assert torch.allclose(both, (model(images) + model(images.flip(-1))) / 2)
    assert torch.equal(predict_logits(model, images), model(images))


def test_random_crops_shift_by_whole_pixels():
    from core.data.augment import BatchPreprocessor
    images = torch.rand(32, 1, 12, 12)
    prep = BatchPreprocessor([0.5], [0.25], RunConfig(aug_random_crop=True, crop_padding=2))
    out = prep.augment(images.clone(), generator=torch.Generator().manual_seed(3))

    def shifted(image, dx, dy):
        padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
        return padded[..., 2 + dy:14 + dy, 2 + dx:14 + dx]
    shifts = []
    for original, result in zip(images, out):
        found = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                 if torch.allclose(result, shifted(original, dx, dy), atol=1e-5)]
        assert found, "not a whole-pixel shift of the input"
        shifts.append(found[0])
    assert len(set(shifts)) > 5          # drawn per sample


# --- the Train form: the model's natural size, the recipe button ------------------------------------
def test_the_model_picker_proposes_its_natural_image_size(app):
    app.run().switch_page(page_path("train")).run()
    assert app.number_input(key="ds_size_digits").value == 16
    app.selectbox(key="ds_model").set_value("imagenet-resnet18").run()
    no_errors(app)
    assert app.number_input(key="ds_size_digits").value == 224
    assert any("trained at 224x224: proposed image size 224" in c.value for c in app.caption)
    version = app.session_state["form_version"]
    assert app.checkbox(key=f"tf_digits_{version}_pretrained").value
    app.number_input(key="ds_size_digits").set_value(64).run()       # a person's own, smaller size
    [caption] = [c.value for c in app.caption if "trained at 224x224" in c.value]
    assert "proposed" not in caption and "at 64x64 it trains faster" in caption
    app.number_input(key="ds_size_digits").set_value(224).run()
    app.selectbox(key="ds_model").set_value("simple-cnn").run()
    assert app.number_input(key="ds_size_digits").value == 16      # back to the data's own
    # A network without ImageNet weights is not offered the settings that need them.
    keys = {w.key for w in (*app.checkbox, *app.number_input)}
    assert not keys & {f"tf_digits_{version}_{name}" for name in
                       ("pretrained", "freeze_backbone", "finetune_head_epochs", "backbone_lr_factor")}
    assert any("simple-cnn starts from random weights" in c.value for c in app.caption)


def test_one_click_fills_the_form_with_the_fast_recipe(app):
    app.run().switch_page(page_path("train")).run()
    [button] = [b for b in app.button if b.label == "Recipe: Fast Fashion-MNIST"]
    button.click().run()
    no_errors(app)
    version = app.session_state["form_version"]
    assert app.selectbox(key="ds_name").value == "fashion-mnist"
    assert app.selectbox(key="ds_model").value == "resnet18"
    assert app.number_input(key="ds_size_fashion-mnist").value == 28
    prefix = f"tf_fashion-mnist_{version}"
    assert app.number_input(key=f"{prefix}_lr").value == 0.4
    assert app.number_input(key=f"{prefix}_batch_size").value == 512
    assert app.number_input(key=f"{prefix}_epochs").value == 30
    assert app.selectbox(key=f"{prefix}_scheduler").value == "onecycle"
    assert app.checkbox(key=f"{prefix}_tta_flip").value is True
    assert any("Fast Fashion-MNIST recipe" in i.value for i in app.info)
    sized_for_a_gpu = [w.value for w in app.warning if "sized for a GPU" in w.value]
    assert len(sized_for_a_gpu) == (0 if torch.cuda.is_available() else 1)    # said where it runs for hours
    if sized_for_a_gpu:
        assert "30 epochs would take hours here" in sized_for_a_gpu[0]
