"""core.jobs.launcher: one way to start a run's process, alone or as a torchrun group, with the same
log and the same exit code either way."""
import signal
import sys
import time
from pathlib import Path

import pytest

from core.jobs.launcher import command, launch

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))      # tests/launched.py, as `-m launched`


def test_the_command_of_one_process_and_of_a_group():
    assert command("core.training.worker", ["runs/a"]) == [sys.executable, "-m", "core.training.worker", "runs/a"]
    assert command("core.training.worker", ["runs/a"], processes=4) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
        "-m", "core.training.worker", "runs/a"]
    with pytest.raises(ValueError):
        command("core.training.worker", [], processes=0)


def test_one_process_writes_its_log_and_gives_its_exit_code(tmp_path):
    log = tmp_path / "log"
    log.write_text("earlier\n")
    child = launch("launched", ["5", tmp_path], log)
    assert child.wait(60) == 5 and child.returncode == 5 and child.poll() == 5
    assert log.read_text() == f"earlier\nrank - of -: 5 {tmp_path}\n"     # appended, unbuffered


def test_a_torchrun_group_gives_its_main_process_exit_code_not_torchruns(tmp_path):
    """torchrun itself exits 1 when a process fails: the supervisor would read 'failed' where the
    worker said 'another process holds the lease' (3)."""
    log = tmp_path / "log"
    child = launch("launched", ["3"], log, processes=2)
    assert child.wait(120) == 3
    assert child.process.returncode == 1          # what torchrun said
    text = log.read_text()
    assert "rank 0 of 2: 3" in text and "rank 1 of 2: 3" in text


def test_a_killed_process_reports_the_signal(tmp_path):
    log = tmp_path / "log"
    child = launch("launched", ["sleep"], log)
    while "rank" not in (log.read_text() if log.exists() else ""):
        assert child.poll() is None
        time.sleep(0.05)
    child.kill()
    assert child.wait(60) == -signal.SIGKILL
