"""Probes: what a record holds, which steps are probed, dead units, and no repeats after a kill."""
import json
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_digits
from core.analysis.insight import read_probes
from core.runs.streams import JsonLinesWriter, truncate_probes
from core.training.hooks import LoopState
from core.training.probes import BINS, ProbeRecorder, histogram_edges, is_probed, tensor_stats
from crash_points import train_until_killed


def test_tensor_stats_match_numpy():
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 3 + 1
    x[:300] = 0
    stats = tensor_stats(x)
    a = x.numpy().astype(np.float64)
    assert stats["norm"] == pytest.approx(np.linalg.norm(a), rel=1e-5)
    assert stats["mean"] == pytest.approx(a.mean(), rel=1e-5)
    assert stats["std"] == pytest.approx(a.std(), rel=1e-4)
    assert (stats["min"], stats["max"]) == (pytest.approx(a.min(), rel=1e-5), pytest.approx(a.max(), rel=1e-5))
    assert stats["zero_frac"] == pytest.approx(0.15)
    counts, edges = np.histogram(a, BINS, range=(a.min(), a.max()))
    assert stats["hist"] == counts.tolist()
    assert histogram_edges(stats) == pytest.approx(edges.tolist(), abs=1e-4)       # min and max to 6 digits


def test_a_constant_or_non_finite_tensor_keeps_its_counts_honest():
    constant = tensor_stats(torch.full((10,), 0.5))
    assert sum(constant["hist"]) == 10 and constant["std"] < 1e-3 * constant["mean"]
    broken = tensor_stats(torch.tensor([1.0, float("inf"), 2.0]))
    assert broken["max"] == float("inf") and sum(broken["hist"]) == 0      # no made-up histogram


@pytest.mark.parametrize("interval, probed", [(3, [3, 5, 6, 9, 10]), (0, [5, 10]), (5, [5, 10])])
def test_probed_steps_are_the_interval_and_every_epoch_end(interval, probed):
    steps_per_epoch = 5
    steps = [step for step in range(1, 11)
             if is_probed(step, (step - 1) % steps_per_epoch, steps_per_epoch, interval)]
    assert steps == probed


class Driver:
    """Calls a ProbeRecorder's hooks in the order Trainer does, around plain SGD steps on any model,
    with a validation pass (eval mode) after each epoch."""

    def __init__(self, model, recorder, steps_per_epoch, lr=0.1):
        self.model, self.recorder, self.lr = model, recorder, lr
        self.state = LoopState(steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * 100)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.hooked_steps = []      # the steps whose forward pass ran with the recorder's hooks on

    def run(self, epochs, x, y):
        s = self.state
        self.recorder.on_fit_start(self)
        for _ in range(epochs):
            self.model.train()
            for _ in range(s.steps_per_epoch):
                if self.recorder.hooks:
                    self.hooked_steps.append(s.step + 1)
                loss = F.cross_entropy(self.model(x), y)
                self.optimizer.zero_grad()
                loss.backward()
                self.recorder.on_before_optimizer_step(self)
                self.optimizer.step()
                s.step += 1
                s.batch_in_epoch += 1
                self.recorder.on_batch_end(self)
            self.model.eval()
            with torch.no_grad():
                self.model(x)              # validation: never probed
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            self.recorder.on_epoch_end(self, [])
        self.recorder.on_fit_end(self, "completed")


def dead_channel_model():
    """A conv whose channels 0 and 1 can never fire (bias -1000), then a linear head."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        model[0].weight.clamp_(-0.1, 0.1)
        model[0].bias[:2] = -1000.0
    return model


def probe_run(store, model, epochs=2, steps_per_epoch=5, interval=3, lr=0.1):
    run_id = store.create_run(tiny_digits())
    writer = JsonLinesWriter(store.probes_path(run_id))
    driver = Driver(model, ProbeRecorder(writer, interval), steps_per_epoch, lr=lr)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    driver.run(epochs, x, torch.arange(16) % 3)
    writer.close()
    return run_id, driver


def test_a_record_holds_every_layer_dead_units_and_the_update_ratio(store):
    model = dead_channel_model()
    run_id, driver = probe_run(store, model, lr=0.1)
    records, missing = read_probes(store, run_id)
    assert missing is None
    assert [(r["step"], r["epoch"], r["epoch_end"]) for r in records] == \
        [(3, 1, False), (5, 1, True), (6, 2, False), (9, 2, False), (10, 2, True)]
    assert driver.hooked_steps == [3, 5, 6, 9, 10]        # hooks only around probed steps
    for record in records:
        assert set(record["layers"]) == {"0", "3"}
        conv = record["layers"]["0"]
        assert conv["type"] == "Conv2d" and conv["params"] == 36
        assert sum(conv["weight"]["hist"]) == sum(conv["grad"]["hist"]) == 36
        # The dead channels' weights get no gradient: half of the conv's gradient is exactly zero.
        assert conv["grad"]["zero_frac"] == pytest.approx(0.5)
        # Plain SGD: the step moved the weights by lr * gradient.
        for layer in record["layers"].values():
            assert layer["update_ratio"] == pytest.approx(0.1 * layer["grad"]["norm"] / layer["weight"]["norm"],
                                                          rel=1e-4)
        # One ReLU call per training forward: the validation pass in between is not counted.
        assert record["activations"] == {"1": {"zero_frac": pytest.approx(record["activations"]["1"]["zero_frac"]),
                                                "dead_frac": 0.5}}
        assert record["activations"]["1"]["zero_frac"] >= 0.5
    assert all(not m._forward_hooks for m in model.modules())


def test_the_weights_recorded_are_the_model_weights_before_the_step(store):
    model = dead_channel_model()
    run_id, _ = probe_run(store, model, epochs=1, steps_per_epoch=1, interval=0, lr=0.0)
    [record] = read_probes(store, run_id)[0]
    weight = model[3].weight.detach().double()
    stats = record["layers"]["3"]["weight"]
    assert stats["norm"] == pytest.approx(weight.norm().item(), rel=1e-5)
    assert (stats["min"], stats["max"]) == (pytest.approx(weight.min().item()), pytest.approx(weight.max().item()))
    assert record["layers"]["3"]["update_ratio"] == 0.0


class NoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x.flatten(1)[:, :3] * self.scale


def test_a_model_without_conv_or_linear_layers_says_so(store):
    run_id, _ = probe_run(store, NoLayers(), epochs=1)
    records, missing = read_probes(store, run_id)
    assert records and all(r["layers"] == {} for r in records)
    assert missing == f"run {run_id}'s model has no conv or linear layers: its probes hold no weight or " \
                      "gradient statistics"


def test_a_run_without_probes_says_it_predates_them(store, trained):
    store.probes_path(trained).unlink()
    assert read_probes(store, trained) == ([], f"run {trained} has no probes (probes.jsonl is missing): it was "
                                                "trained before Trainboard recorded probes")


def test_truncate_drops_torn_lines_foreign_lines_and_lost_steps(tmp_path):
    path = tmp_path / "probes.jsonl"
    good = [json.dumps({"step": s, "epoch": 1, "layers": {}}).encode() for s in (5, 10, 15)]
    path.write_bytes(b"\n".join([good[0], b'{"split": "train"}', good[1], good[2], b'{"step": 2']))
    assert truncate_probes(path, keep_until_step=10) == 3
    assert path.read_bytes() == good[0] + b"\n" + good[1] + b"\n"


def test_a_resume_after_a_kill_records_each_probed_step_once(store, train):
    epochs = 2
    run_id = store.create_run(tiny_digits(epochs=epochs, probe_interval=7))
    # Dies just before epoch 2's latest.pt (the saves: latest 1, best 1, latest 2): that epoch's probes
    # are on disk, past the checkpoint.
    assert train_until_killed(store.root, run_id, "before-checkpoint", 3) == -signal.SIGKILL
    steps_per_epoch = store.read_status(run_id)["steps_per_epoch"]
    assert max(r["step"] for r in store.probe_reader(run_id).read_new()) == epochs * steps_per_epoch
    assert train(store, run_id) == "completed"
    records, missing = read_probes(store, run_id)
    total = epochs * steps_per_epoch
    expected = sorted(set(range(7, total + 1, 7)) | {steps_per_epoch * e for e in range(1, epochs + 1)})
    assert missing is None and [r["step"] for r in records] == expected
    assert [r["epoch"] for r in records if r["epoch_end"]] == [1, 2]
