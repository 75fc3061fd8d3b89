"""The training loop, run in-process through run_training (what the child process runs)."""
import pytest
import torch

from conftest import tiny_digits
from core.runs.checkpoint import load_checkpoint
from core.training.hooks import Callback


class AtStep(Callback):
    """Calls `action(trainer)` once, after the given optimizer step."""

    def __init__(self, step, action):
        self.step, self.action, self.done = step, action, False

    def on_batch_end(self, trainer):
        if trainer.state.step == self.step and not self.done:
            self.done = True
            self.action(trainer)


def test_short_digits_run_learns(store, train):
    run_id = store.create_run(tiny_digits(image_size=16, epochs=4, batch_size=32))
    assert train(store, run_id) == "completed"
    status = store.read_status(run_id)
    assert status["state"] == "completed" and status["step"] == status["total_steps"]
    val = [r for r in store.read_metrics(run_id) if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2, 3, 4]
    assert val[-1]["acc"] >= 0.90
    assert status["best"]["metric"] == "val_acc" and status["best"]["value"] >= 0.90
    assert store.checkpoint_path(run_id, "best").exists() and store.checkpoint_path(run_id, "latest").exists()


def test_metrics_rows_carry_the_contract_fields(store, train):
    run_id = store.create_run(tiny_digits(epochs=1, log_interval=3))
    train(store, run_id)
    rows = store.read_metrics(run_id)
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(3, 20, 3))
    for row in rows:
        assert {"time", "step", "epoch", "split", "loss", "acc"} <= set(row)
    epoch_train = [r for r in rows if r["kind"] == "epoch" and r["split"] == "train"][0]
    assert {"lr", "samples_per_s", "epoch_time"} <= set(epoch_train)


def test_stop_ends_within_one_batch_and_saves_the_position(store, train):
    run_id = store.create_run(tiny_digits(epochs=3))
    stop = AtStep(7, lambda t: store.stop_path(run_id).write_text("stop"))
    assert train(store, run_id, [stop]) == "stopped"
    status = store.read_status(run_id)
    # Asked after batch 7 (once the watcher had looked): batch 8 is the one in flight, then it ends.
    assert (status["state"], status["step"]) == ("stopped", 8)
    checkpoint = load_checkpoint(store.checkpoint_path(run_id, "latest"))
    assert checkpoint["loop"]["step"] == 8 and checkpoint["loop"]["batch_in_epoch"] == 8
    assert not store.stop_path(run_id).exists()


def test_resume_continues_the_epoch_count_and_the_curve(store, train):
    config = tiny_digits(epochs=3, log_interval=2)
    straight = store.create_run(config)
    train(store, straight)

    resumed = store.create_run(config)
    stop = AtStep(25, lambda t: store.stop_path(resumed).write_text("stop"))   # mid epoch 2
    assert train(store, resumed, [stop]) == "stopped"
    assert train(store, resumed) == "completed"

    rows = store.read_metrics(resumed)
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [1, 2, 3]
    assert store.read_status(resumed)["step"] == store.read_status(straight)["step"]
    # Same order, same RNG: the resumed run ends where the uninterrupted one does.
    final = {run: [r for r in store.read_metrics(run) if r["split"] == "val"][-1]["loss"]
             for run in (straight, resumed)}
    assert abs(final[straight] - final[resumed]) < 1e-4


def test_resume_after_a_crash_drops_lost_and_torn_lines(store, train):
    run_id = store.create_run(tiny_digits(epochs=2, log_interval=2))
    train(store, run_id)
    latest = store.checkpoint_path(run_id, "latest")
    checkpoint = load_checkpoint(latest)
    checkpoint["loop"].update(epoch=1, step=20)
    torch.save(checkpoint, latest)   # as if the process died during epoch 2
    with open(store.metrics_path(run_id), "ab") as handle:
        handle.write(b'{"step": 99, "spl')
    store.update_status(run_id, state="interrupted")
    assert train(store, run_id) == "completed"
    raw = store.metrics_path(run_id).read_bytes()
    assert raw.endswith(b"\n") and b'"spl\n' not in raw
    steps = [r["step"] for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_nan_loss_fails_the_run_with_the_step(store, train):
    run_id = store.create_run(tiny_digits(epochs=2))

    def poison(trainer):
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
    assert train(store, run_id, [AtStep(3, poison)]) == "failed"
    status = store.read_status(run_id)
    assert status["state"] == "failed"
    assert "loss became nan at step 4" in status["error"]


def test_early_stopping(store, train):
    # lr so small the accuracy never improves after the first epoch: patience 1 ends the run at epoch 2.
    run_id = store.create_run(tiny_digits(epochs=10, lr=1e-12, scheduler="none", early_stopping_patience=1))
    assert train(store, run_id) == "completed"
    status = store.read_status(run_id)
    assert (status["early_stopped_at"], status["epoch"]) == (2, 2)


def test_every_optimizer_scheduler_and_augmentation_runs(store, train):
    for optimizer, scheduler in (("sgd", "step"), ("adam", "onecycle"), ("adamw", "plateau")):
        config = tiny_digits(epochs=2, optimizer=optimizer, scheduler=scheduler, label_smoothing=0.1,
                             class_weighted_loss=True, grad_clip=1.0, aug_random_crop=True,
                             aug_flip=True, aug_rotation=10.0, aug_color_jitter=0.2)
        run_id = store.create_run(config)
        assert train(store, run_id) == "completed", store.read_status(run_id)
    lrs = [r["lr"] for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert all(lr > 0 for lr in lrs)


class Recorder(Callback):
    """Remembers which hooks ran, in order, and the gradients seen before each optimizer step."""

    def __init__(self):
        self.calls, self.grads_present, self.errors = [], [], []

    def on_before_optimizer_step(self, trainer):
        self.calls.append("before_step")
        self.grads_present.append(all(p.grad is not None for p in trainer.model.parameters()))

    def on_validation_end(self, trainer, val_row):
        self.calls.append("validation_end")

    def on_epoch_end(self, trainer, rows):
        self.calls.append("epoch_end")

    def on_exception(self, trainer, error):
        self.errors.append(error)


def test_train_step_is_one_step_that_never_waits_for_the_host():
    from core.data.datasets import load_dataset
    from core.training.trainer import Trainer
    config = tiny_digits(epochs=1)
    trainer = Trainer(config, load_dataset(config), device=torch.device("cpu"))
    split = trainer.train_split
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, correct = trainer.train_step((split.images[:32], split.labels[:32]))
    assert torch.is_tensor(loss) and loss.dim() == 0 and not loss.requires_grad
    assert torch.is_tensor(correct) and 0 <= int(correct) <= 32
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_hooks_and_the_logged_gradient_norm(store, train):
    recorder = Recorder()
    run_id = store.create_run(tiny_digits(epochs=2, log_interval=4))
    assert train(store, run_id, [recorder]) == "completed"
    steps = store.read_status(run_id)["step"]
    assert recorder.calls.count("before_step") == steps and all(recorder.grads_present)
    assert recorder.calls[-2:] == ["validation_end", "epoch_end"]
    rows = [r for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert rows and all(r["grad_norm"] > 0 for r in rows)


def test_the_gradient_norm_is_measured_before_clipping(store, train):
    run_id = store.create_run(tiny_digits(epochs=1, log_interval=2, grad_clip=1e-3))
    train(store, run_id)
    norms = [r["grad_norm"] for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert min(norms) > 1e-3        # what clipping found, not what it left


def test_a_failure_reaches_on_exception(store, train):
    recorder = Recorder()

    def poison(trainer):
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
    run_id = store.create_run(tiny_digits(epochs=1, log_interval=50))
    assert train(store, run_id, [AtStep(2, poison), recorder]) == "failed"
    [error] = recorder.errors
    assert "loss became nan at step 3" in str(error)      # found at the epoch's end, step still named
    assert "loss became nan at step 3" in store.read_status(run_id)["error"]


@pytest.mark.parametrize("order", ["checkpointer first", "early stopping first"])
def test_best_checkpoint_and_early_stopping_do_not_depend_on_order(tmp_path, order):
    from core.data.datasets import load_dataset
    from core.training.callbacks import Checkpointer, EarlyStopping
    from core.training.trainer import Trainer
    config = tiny_digits(epochs=10, lr=1e-12, scheduler="none")
    checkpointer = Checkpointer(tmp_path / "latest.pt", tmp_path / "best.pt", "val_loss")
    early = EarlyStopping(patience=1, metric="val_acc")
    callbacks = [checkpointer, early] if order == "checkpointer first" else [early, checkpointer]
    trainer = Trainer(config, load_dataset(config), callbacks, device=torch.device("cpu"))
    trainer.fit()
    assert trainer.state.stop_reason == "early" and trainer.state.epoch == 2
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["loop"]["epoch"] == checkpointer.monitor.best_epoch           # its own metric's best
    latest = load_checkpoint(tmp_path / "latest.pt")
    assert latest["callbacks"]["EarlyStopping"]["since_best"] == 1           # saved after its update
    assert latest["callbacks"]["Checkpointer"]["best"] == checkpointer.monitor.best


def test_a_flip_is_torch_flip_under_a_seeded_generator():
    from core.config import RunConfig
    from core.data.augment import BatchPreprocessor
    images = torch.rand(64, 3, 8, 8)
    prep = BatchPreprocessor([0.5] * 3, [0.25] * 3, RunConfig(aug_flip=True))
    out = prep.augment(images.clone(), generator=torch.Generator().manual_seed(7))
    flipped = torch.rand(64, generator=torch.Generator().manual_seed(7)) < 0.5   # the same draw
    assert 10 < int(flipped.sum()) < 54
    assert torch.allclose(out[flipped], torch.flip(images[flipped], dims=[-1]), atol=1e-6)
    assert torch.allclose(out[~flipped], images[~flipped], atol=1e-6)
    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(prep(pixels, train=False), prep.normalise(pixels.float() / 255))   # none at eval


def test_the_heartbeat_carries_the_step_between_log_lines(store, monkeypatch, train):
    """A slow model logs a line every minute or so: status.json's step (the Train page's progress)
    follows each heartbeat, not only the log lines."""
    import time

    import core.training.callbacks
    monkeypatch.setattr(core.training.callbacks, "HEARTBEAT_EVERY_S", 0.05)
    seen = []

    class SlowBatch(Callback):
        def on_batch_end(self, trainer):
            if trainer.state.step == 3:          # no log line yet (log_interval 1000): wait for a beat
                deadline = time.monotonic() + 10
                while store.read_status(run_id).get("step") != 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                seen.append(store.read_status(run_id).get("step"))

    run_id = store.create_run(tiny_digits(epochs=1, log_interval=1000))
    assert train(store, run_id, [SlowBatch()]) == "completed"
    assert seen == [3]
