import json
import subprocess
import time

import pytest

from core.config import RunConfig
from core.store import InvalidRunId, MetricsReader, truncate_metrics


def test_create_read_and_list(store):
    run_id = store.create_run(RunConfig(name="My First Run!"))
    assert "my-first-run" in run_id
    assert store.read_config(run_id).name == "My First Run!"
    assert store.read_status(run_id)["state"] == "created"
    [summary] = store.list_runs()
    assert (summary.run_id, summary.state, summary.progress) == (run_id, "created", 0.0)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "", "UPPER", "x" * 200, ".hidden"])
def test_unsafe_run_ids_are_rejected_everywhere(store, bad):
    with pytest.raises(InvalidRunId):
        store.run_dir(bad)
    with pytest.raises(InvalidRunId):
        store.read_status(bad)
    assert not store.exists(bad)


def test_metrics_reader_waits_for_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"st')
    reader = MetricsReader(path)
    assert [r["step"] for r in reader.read_new()] == [1, 2]
    assert reader.read_new() == []
    with open(path, "ab") as handle:
        handle.write(b'ep": 3}\n{"step": 4}\n')
    assert [r["step"] for r in reader.read_new()] == [3, 4]


def test_truncate_drops_torn_line_and_lost_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    assert truncate_metrics(path, keep_until_step=2) == 2
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n'


def test_stale_running_runs_become_interrupted(store):
    dead = subprocess.Popen(["true"])
    dead.wait()
    a = store.create_run(RunConfig(name="dead owner"))
    store.update_status(a, state="running", pid=dead.pid, host=__import__("socket").gethostname(),
                        heartbeat=time.time())
    b = store.create_run(RunConfig(name="old heartbeat"))
    store.update_status(b, state="running", pid=None, heartbeat=time.time() - 60)
    c = store.create_run(RunConfig(name="alive"))
    store.update_status(c, state="running", pid=__import__("os").getpid(),
                        host=__import__("socket").gethostname(), heartbeat=time.time())
    assert store.read_status(a)["state"] == "interrupted"
    assert store.read_status(b)["state"] == "interrupted"
    assert store.read_status(c)["state"] == "running"
    assert json.loads((store.run_dir(a) / "status.json").read_text())["state"] == "running"
    assert sorted(store.mark_interrupted_runs()) == sorted([a, b])
    assert json.loads((store.run_dir(a) / "status.json").read_text())["state"] == "interrupted"


def test_delete_refuses_active_runs(store):
    import os
    run_id = store.create_run(RunConfig())
    store.update_status(run_id, state="running", pid=os.getpid(), host=__import__("socket").gethostname(),
                        heartbeat=time.time())
    with pytest.raises(RuntimeError, match="stop it before deleting"):
        store.delete_run(run_id)
    store.update_status(run_id, state="stopped")
    store.delete_run(run_id)
    assert store.run_ids() == []


def test_no_temp_files_are_left_behind(store):
    run_id = store.create_run(RunConfig())
    for i in range(20):
        store.update_status(run_id, step=i)
    assert sorted(p.name for p in store.run_dir(run_id).iterdir()) == ["checkpoints", "config.json", "status.json"]
