"""`python -m core ...` as a person runs it (in this process, through main(argv)): exit codes,
messages, nothing written on rejection."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from core.config import SETTINGS
from core.runs.states import HOST


def test_train_runs_show_and_resume(tmp_path, cli):
    runs = tmp_path / "runs"
    done = cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--set", "image_size=8",
               "--set", "log_interval=5", runs=runs)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    assert f"run {run_id}: completed, best val_acc" in done.stdout
    assert done.stderr.startswith("epoch 1/2: loss ")     # not a terminal: a line per epoch, no bar
    listing = cli("runs", runs=runs)
    assert run_id in listing.stdout and "completed" in listing.stdout and "100%" in listing.stdout
    shown = json.loads(cli("show", run_id, runs=runs).stdout)
    assert shown["config"]["model"] == "mlp" and shown["status"]["state"] == "completed"
    assert shown["last_metrics"]["val/epoch"]["epoch"] == 2 and shown["unknown_settings"] == {}
    again = cli("resume", run_id, runs=runs)
    assert again.returncode == 2 and "only failed, interrupted, stopped runs can be resumed" in again.stderr


def test_rejected_input_exits_2_and_writes_nothing(tmp_path, cli):
    runs = tmp_path / "runs"
    bad = cli("train", "--epochs", "0", "--set", "lr=-1", "--set", "optimizer=rmsprop", runs=runs)
    assert bad.returncode == 2
    assert "error: epochs must be >= 1, got 0" in bad.stderr and "error: lr must be > 0, got -1" in bad.stderr
    assert "error: optimizer must be one of sgd, adam, adamw; got 'rmsprop'" in bad.stderr
    assert cli("train", "--dataset", "imagenet", runs=runs).returncode == 2
    assert cli("train", "--set", "colour=red", runs=runs).stderr.strip() == "error: unknown setting 'colour'"
    missing = cli("train", "--dataset", "image-folder", "--data", tmp_path / "nope", runs=runs)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not runs.exists() or list(runs.iterdir()) == []
    for args in (("show", "../../etc"), ("show", "no-such-run"), ("resume", "a/b")):
        result = cli(*args, runs=runs)
        assert result.returncode == 2 and result.stderr.startswith("error: ")


def test_set_values_are_parsed_by_their_setting(tmp_path, cli):
    runs = tmp_path / "runs"
    done = cli("train", "--epochs", "1", "--set", "image_size=8", "--set", "lr=1", "--set", "aug_flip=TRUE",
               "--set", "name=12", "--set", "grad_clip=2", runs=runs)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    config = json.loads((runs / run_id / "config.json").read_text())
    assert (config["lr"], config["aug_flip"], config["name"], config["grad_clip"]) == (1.0, True, "12", 2.0)
    assert isinstance(config["lr"], float) and config["schema_version"] == 2


def test_batch_size_takes_a_number_or_auto_and_auto_needs_cuda(tmp_path, cli):
    runs = tmp_path / "runs"
    done = cli("train", "--epochs", "1", "--set", "image_size=8", "--batch-size", "32", runs=runs)
    assert done.returncode == 0, done.stderr
    config = json.loads((runs / done.stdout.split()[1] / "config.json").read_text())
    assert config["batch_size"] == 32 and isinstance(config["batch_size"], int)
    before = sorted(runs.iterdir())
    auto = cli("train", "--batch-size", "auto", "--set", "device=cpu", runs=runs)
    assert auto.returncode == 2 and "batch_size auto needs a CUDA GPU" in auto.stderr
    assert "Traceback" not in auto.stderr and sorted(runs.iterdir()) == before
    bad = cli("train", "--batch-size", "lots", runs=runs)
    assert bad.returncode == 2 and bad.stderr.startswith("error: batch_size") and sorted(runs.iterdir()) == before


def test_train_help_lists_every_setting(capsys):
    from core.__main__ import main
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for name, setting in SETTINGS.items():
        assert f"  {name} = {setting.default!r}: {setting.label}; {setting.rule()}" in text, name


# What each command's --help lists (positionals, then options), in the order `python -m core --help` lists them.
HELP = {
    "train": "-h --runs --config --dataset --model --epochs --batch-size --lr --data --set --name",
    "check": "-h --runs --config --dataset --model --epochs --batch-size --lr --data --set --json",
    "lr-find": "-h --runs --config --dataset --model --epochs --batch-size --lr --data --set --min-lr --max-lr --steps",
    "runs": "-h --runs",
    "stop": "run_id -h --runs",
    "delete": "run_id -h --runs --yes",
    "show": "run_id -h --runs --config --yaml",
    "resume": "run_id -h --runs",
    "diagnose": "run_id -h --runs",
    "eval": "run_id -h --runs --checkpoint --split --report",
    "embed": "run_id -h --runs --split --method --checkpoint --out",
    "export": "run_id -h --runs --quantize --torchscript",
    "predict": "run_id FILE -h --runs --top-k --backend --explain",
    "serve": "run_id -h --runs --port --host --backend --max-mb --concurrency --body-timeout",
    "tensorboard": "run_id -h --runs --out",
    "import-data": "ZIP -h --runs --name --add",
    "delete-data": "NAME -h --runs --class --image --yes",
    "tag": "run_id -h --runs --add --remove",
    "note": "run_id text -h --runs",
}


def test_help_lists_every_command_in_order_and_each_ones_arguments(capsys):
    from core.__main__ import main
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "{" + ",".join(HELP) + "}" in text
    assert re.findall(r"^    (\S+)", text, re.M) == list(HELP)      # each with its one-line help
    for command, arguments in HELP.items():
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out.split("settings for --set")[0]      # the settings epilog is indented too
        assert text.startswith(f"usage: python -m core {command} [-h] [--runs RUNS]"), command
        assert " ".join(re.findall(r"^  ([^\s,]+)", text, re.M)) == arguments, command


EPOCH_LINE = r"epoch (\d)/3: loss \d+\.\d{4} acc [01]\.\d{3} \| val_loss \d+\.\d{4} val_acc [01]\.\d{3} \(\d+\.\d s\)"


def test_a_log_gets_a_line_per_epoch_and_a_terminal_the_bar(tmp_path, cli, monkeypatch):
    args = ("train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--set", "image_size=8")
    logged = cli(*args, runs=tmp_path / "runs")        # capsys's stderr is not a terminal, as a log file is not
    assert logged.returncode == 0, logged.stderr
    assert "\r" not in logged.stderr                   # no bar refreshes
    assert [re.fullmatch(EPOCH_LINE, line)[1] for line in logged.stderr.splitlines()] == ["1", "2", "3"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = cli(*args, runs=tmp_path / "runs")
    assert bar.returncode == 0 and "\r" in bar.stderr and "step/s" in bar.stderr and "epoch 1/3:" not in bar.stderr


def test_a_log_says_where_a_stopped_run_ended_and_where_its_resume_picks_up(tmp_path, cli, monkeypatch):
    from core.training.callbacks import StopFileWatcher
    watch = StopFileWatcher.on_batch_end

    def stop_asked_at_step_25(self, trainer):       # mid epoch 2, as `python -m core stop` from elsewhere
        if trainer.state.step == 25:
            Path(self.stop_path).write_text("stop")
        watch(self, trainer)
    monkeypatch.setattr(StopFileWatcher, "on_batch_end", stop_asked_at_step_25)
    runs = tmp_path / "runs"
    stopped = cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--set", "image_size=8",
                  runs=runs)
    assert stopped.returncode == 0 and stopped.stdout.splitlines()[-1].split(":")[1].startswith(" stopped")
    first, last = stopped.stderr.splitlines()
    assert re.fullmatch(EPOCH_LINE, first)[1] == "1"
    total = re.fullmatch(r"stopped at step 25/(\d+); resume continues it", last)[1]
    monkeypatch.undo()
    resumed = cli("resume", stopped.stdout.split()[1], runs=runs)
    assert resumed.returncode == 0, resumed.stderr
    picked_up, *epochs = resumed.stderr.splitlines()
    assert picked_up == f"resuming at step 25/{total}, in epoch 2/3"
    assert [re.fullmatch(EPOCH_LINE, line)[1] for line in epochs] == ["2", "3"]


def test_a_failed_run_exits_1(tmp_path, image_folder, cli):
    for png in image_folder.rglob("*.png"):
        png.write_bytes(b"garbage")
    result = cli("train", "--dataset", "image-folder", "--data", image_folder, "--batch-size", "2",
                 runs=tmp_path / "runs")
    assert result.returncode == 1
    assert (result.stdout + result.stderr).count("could be read") == 1     # the worker says it; not again
    assert "Traceback" not in result.stderr and "error: none of the 36 images" in result.stderr
    assert result.stdout.splitlines()[-1].endswith(": failed")


def test_a_failure_the_worker_does_not_print_is_said_once_on_stderr(tmp_path, cli, monkeypatch):
    from core.training.trainer import Trainer, TrainingDiverged

    def diverge(self):
        raise TrainingDiverged("loss became nan at step 3; try a lower lr or gradient clipping", step=3)
    monkeypatch.setattr(Trainer, "fit", diverge)      # a real lr that diverges does so only on some seeds
    result = cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--set", "image_size=8",
                 runs=tmp_path / "runs")
    assert result.returncode == 1 and result.stdout.splitlines()[-1].endswith(": failed")
    assert (result.stdout + result.stderr).count("loss became nan") == 1
    assert result.stderr.splitlines()[-1] == "error: loss became nan at step 3; try a lower lr or gradient clipping"


def test_a_dataset_that_cannot_be_loaded_is_rejected_before_any_run_folder_exists(tmp_path, cli):
    runs, data = tmp_path / "runs", tmp_path / "data"
    result = cli("train", "--dataset", "fashion-mnist", "--data", data, "--epochs", "1", runs=runs)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: Fashion-MNIST's files were not found. Looked for train-images-idx3-ubyte, "
                                    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte")
    assert f"in {data}, {data / 'FashionMNIST' / 'raw'}" in result.stderr
    assert not runs.exists() and not data.exists()


def test_stop_a_queued_or_running_run_and_refuse_a_finished_one(tmp_path, cli, trained):
    from conftest import tiny_digits
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    queued = store.create_run(tiny_digits())
    store.transition(queued, "queued", pid=os.getpid(), host=HOST)
    result = cli("stop", queued, runs=store.root)
    assert result.returncode == 0 and result.stdout == f"run {queued}: stopped (it was queued)\n"
    assert store.read_status(queued)["state"] == "stopped"
    running = store.create_run(tiny_digits())
    store.transition(running, "running", pid=os.getpid(), host=HOST, heartbeat=time.time())
    result = cli("stop", running, runs=store.root)
    assert result.returncode == 0 and "ends after the current batch" in result.stdout
    assert store.stop_path(running).exists()            # what the training process checks after every batch
    result = cli("stop", trained, runs=store.root)
    assert result.returncode == 2
    assert result.stderr == f"error: run {trained} is completed; only queued or running runs can be stopped\n"


def test_delete_asks_for_yes_and_refuses_a_run_that_is_training(tmp_path, cli, trained):
    from core.runs.lease import RunLease
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    asked = cli("delete", trained, runs=store.root)       # stdin is not a terminal here: nothing to ask
    assert asked.returncode == 2 and "add --yes" in asked.stderr and store.exists(trained)
    with RunLease(store.lease_path(trained), trained):      # another process trains it (status may be stale)
        held = cli("delete", trained, "--yes", runs=store.root)
    assert held.returncode == 2 and "already running" in held.stderr and store.exists(trained)
    store.update_status(trained, state="running", pid=os.getpid(), host=HOST, heartbeat=time.time())
    active = cli("delete", trained, "--yes", runs=store.root)
    assert active.returncode == 2 and "stop it before deleting it" in active.stderr and store.exists(trained)
    store.update_status(trained, state="completed", pid=None)
    done = cli("delete", trained, "--yes", runs=store.root)
    assert done.returncode == 0 and done.stdout == f"run {trained} deleted\n"
    assert not store.exists(trained) and store.run_ids() == []
    assert cli("delete", trained, "--yes", runs=store.root).returncode == 2      # no such run


def test_runs_into_a_closed_pipe_ends_quietly(tmp_path, trained):
    reader_gone = subprocess.Popen([sys.executable, "-m", "core", "runs", "--runs", str(tmp_path / "runs")],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()          # as `| head -1` does once it has its line
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait() == 141 and stderr == ""      # 128 + SIGPIPE, as a shell reports `yes | head`


def test_import_data_exits_0_when_all_imported_3_when_some_files_refused_2_when_refused(tmp_path, cli,
                                                                                      monkeypatch):
    import zipfile

    from test_uploads import class_zip
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    runs, good = tmp_path / "runs", class_zip(tmp_path / "good.zip")
    done = cli("import-data", good, "--name", "good", runs=runs)
    assert done.returncode == 0 and "Imported 12 images into good" in done.stdout and done.stderr == ""
    mixed = class_zip(tmp_path / "mixed.zip")
    with zipfile.ZipFile(mixed, "a") as archive:
        archive.writestr("cat/notes.txt", "words")
        archive.writestr("dog/cut.png", b"\x89PNG\r\n\x1a\nbroken")
    some = cli("import-data", mixed, "--name", "mixed", runs=runs)
    assert some.returncode == 3 and "Imported 12 images into mixed" in some.stdout
    notes, cut = sorted(some.stderr.splitlines())          # each refused file with its reason, nothing else
    assert notes.startswith("not imported: cat/notes.txt: not an image")
    assert cut.startswith("not imported: dog/cut.png: ") and len(cut) > len("not imported: dog/cut.png: ")
    none = cli("import-data", tmp_path / "missing.zip", "--name", "none", runs=runs)
    assert none.returncode == 2 and none.stderr.startswith("error: ") and "does not exist" in none.stderr
    assert sorted(os.listdir(runs / ".datasets")) == ["good", "mixed"]


def test_delete_data_asks_for_yes_refuses_what_is_not_a_dataset_and_deletes(tmp_path, cli, monkeypatch):
    from test_uploads import class_zip
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    runs = tmp_path / "runs"
    assert cli("import-data", class_zip(tmp_path / "a.zip"), "--name", "pets", runs=runs).returncode == 0
    (runs / "outside").mkdir()
    asked = cli("delete-data", "pets", runs=runs)         # stdin is not a terminal here: nothing to ask
    assert asked.returncode == 2 and "add --yes" in asked.stderr and (runs / ".datasets" / "pets").is_dir()
    for name, message in (("../outside", "not the name of an uploaded dataset"), (".", "not the name"),
                          (str(runs / "outside"), "not the name"), ("cats", "no uploaded dataset named cats")):
        refused = cli("delete-data", name, "--yes", runs=runs)
        assert refused.returncode == 2 and message in refused.stderr and "nothing was deleted" in refused.stderr
    assert (runs / "outside").is_dir() and os.listdir(runs / ".datasets") == ["pets"]
    # One class: refused before asking when the dataset lacks it, asked for, then deleted.
    owl = cli("delete-data", "pets", "--class", "owl", runs=runs)
    assert owl.returncode == 2 and "pets has no class 'owl' (its classes: cat, dog, fox)" in owl.stderr
    assert "add --yes" in cli("delete-data", "pets", "--class", "fox", runs=runs).stderr
    fox = cli("delete-data", "pets", "--class", "fox", "--yes", runs=runs)
    assert fox.returncode == 0, fox.stderr
    assert fox.stdout == "class fox of dataset pets deleted (4 images); 2 classes and 8 images left\n"
    assert sorted(os.listdir(runs / ".datasets" / "pets")) == ["cat", "dog"]
    cat = sorted(os.listdir(runs / ".datasets" / "pets" / "cat"))
    outside = cli("delete-data", "pets", "--image", "../bugs/1.png", "--yes", runs=runs)
    assert outside.returncode == 2 and "is not an image of pets's classes" in outside.stderr
    one = cli("delete-data", "pets", "--image", f"cat/{cat[0]}", "--yes", runs=runs)
    assert one.returncode == 0 and one.stdout == "1 image(s) of dataset pets deleted; 7 images left\n", one.stderr
    assert sorted(os.listdir(runs / ".datasets" / "pets" / "cat")) == cat[1:]
    done = cli("delete-data", "pets", "--yes", runs=runs)
    assert done.returncode == 0 and done.stdout == "dataset pets deleted (7 images)\n"
    assert os.listdir(runs / ".datasets") == []
    assert cli("delete-data", "pets", "--yes", runs=runs).returncode == 2          # gone
