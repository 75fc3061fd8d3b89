"""The training loop, run in-process through run_training (what the child process runs)."""
import torch

from conftest import tiny_digits
from core.callbacks import load_checkpoint
from core.trainer import Callback
from core.worker import run_training


class AtStep(Callback):
    """Calls `action(trainer)` once, after the given optimizer step."""

    def __init__(self, step, action):
        self.step, self.action, self.done = step, action, False

    def on_batch_end(self, trainer):
        if trainer.state.step == self.step and not self.done:
            self.done = True
            self.action(trainer)


def test_short_digits_run_learns(store):
    run_id = store.create_run(tiny_digits(image_size=16, epochs=4, batch_size=32))
    assert run_training(store, run_id, handle_signals=False) == "completed"
    status = store.read_status(run_id)
    assert status["state"] == "completed" and status["step"] == status["total_steps"]
    val = [r for r in store.read_metrics(run_id) if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2, 3, 4]
    assert val[-1]["acc"] >= 0.90
    assert status["best"]["metric"] == "val_acc" and status["best"]["value"] >= 0.90
    assert store.checkpoint_path(run_id, "best").exists() and store.checkpoint_path(run_id, "latest").exists()


def test_metrics_rows_carry_the_contract_fields(store):
    run_id = store.create_run(tiny_digits(epochs=1, log_interval=3))
    run_training(store, run_id, handle_signals=False)
    rows = store.read_metrics(run_id)
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(3, 20, 3))
    for row in rows:
        assert {"time", "step", "epoch", "split", "loss", "acc"} <= set(row)
    epoch_train = [r for r in rows if r["kind"] == "epoch" and r["split"] == "train"][0]
    assert {"lr", "samples_per_s", "epoch_time"} <= set(epoch_train)


def test_stop_ends_within_one_batch_and_saves_the_position(store):
    run_id = store.create_run(tiny_digits(epochs=3))
    stop = AtStep(7, lambda t: store.stop_path(run_id).write_text("stop"))
    assert run_training(store, run_id, [stop], handle_signals=False) == "stopped"
    status = store.read_status(run_id)
    # Asked after batch 7 (once the watcher had looked): batch 8 is the one in flight, then it ends.
    assert (status["state"], status["step"]) == ("stopped", 8)
    checkpoint = load_checkpoint(store.checkpoint_path(run_id, "latest"))
    assert checkpoint["loop"]["step"] == 8 and checkpoint["loop"]["batch_in_epoch"] == 8
    assert not store.stop_path(run_id).exists()


def test_resume_continues_the_epoch_count_and_the_curve(store):
    config = tiny_digits(epochs=3, log_interval=2)
    straight = store.create_run(config)
    run_training(store, straight, handle_signals=False)

    resumed = store.create_run(config)
    stop = AtStep(25, lambda t: store.stop_path(resumed).write_text("stop"))   # mid epoch 2
    assert run_training(store, resumed, [stop], handle_signals=False) == "stopped"
    assert run_training(store, resumed, handle_signals=False) == "completed"

    rows = store.read_metrics(resumed)
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [1, 2, 3]
    assert store.read_status(resumed)["step"] == store.read_status(straight)["step"]
    # Same order, same RNG: the resumed run ends where the uninterrupted one does.
    final = {run: [r for r in store.read_metrics(run) if r["split"] == "val"][-1]["loss"] for run in (straight, resumed)}
    assert abs(final[straight] - final[resumed]) < 1e-4


def test_resume_after_a_crash_drops_lost_and_torn_lines(store):
    run_id = store.create_run(tiny_digits(epochs=2, log_interval=2))
    run_training(store, run_id, handle_signals=False)
    latest = store.checkpoint_path(run_id, "latest")
    checkpoint = load_checkpoint(latest)
    checkpoint["loop"].update(epoch=1, step=20)
    torch.save(checkpoint, latest)   # as if the process died during epoch 2
    with open(store.metrics_path(run_id), "ab") as handle:
        handle.write(b'{"step": 99, "spl')
    store.update_status(run_id, state="interrupted")
    assert run_training(store, run_id, handle_signals=False) == "completed"
    raw = store.metrics_path(run_id).read_bytes()
    assert raw.endswith(b"\n") and b'"spl\n' not in raw
    steps = [r["step"] for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_nan_loss_fails_the_run_with_the_step(store):
    run_id = store.create_run(tiny_digits(epochs=2))

    def poison(trainer):
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
    assert run_training(store, run_id, [AtStep(3, poison)], handle_signals=False) == "failed"
    status = store.read_status(run_id)
    assert status["state"] == "failed"
    assert "loss became nan at step 4" in status["error"]


def test_early_stopping(store):
    # lr so small the accuracy never improves after the first epoch: patience 1 ends the run at epoch 2.
    run_id = store.create_run(tiny_digits(epochs=10, lr=1e-12, scheduler="none", early_stopping_patience=1))
    assert run_training(store, run_id, handle_signals=False) == "completed"
    status = store.read_status(run_id)
    assert (status["early_stopped_at"], status["epoch"]) == (2, 2)


def test_every_optimizer_scheduler_and_augmentation_runs(store):
    for optimizer, scheduler in (("sgd", "step"), ("adam", "onecycle"), ("adamw", "plateau")):
        config = tiny_digits(epochs=2, optimizer=optimizer, scheduler=scheduler, label_smoothing=0.1,
                             class_weighted_loss=True, grad_clip=1.0, aug_random_crop=True,
                             aug_flip=True, aug_rotation=10.0, aug_color_jitter=0.2)
        run_id = store.create_run(config)
        assert run_training(store, run_id, handle_signals=False) == "completed", store.read_status(run_id)
    lrs = [r["lr"] for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert all(lr > 0 for lr in lrs)


def test_hostile_checkpoint_is_refused(store, tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("this code ran",))
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Boom(), "config": {}}))
    import pytest
    with pytest.raises(ValueError, match="not a readable Trainboard checkpoint"):
        load_checkpoint(path)
