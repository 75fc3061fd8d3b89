"""Every page through Streamlit's AppTest, on an empty run store and on one holding a finished run."""
import json
import shutil

import pytest

from conftest import no_errors, tiny_digits
from core.data.folders import proposed_config
from pages.common import site
from pages.common.site import page_path

PAGES = [page.name for page in site.PAGES]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_an_empty_store(app, page):
    app.run()
    no_errors(app)
    app.switch_page(page_path(page)).run()
    no_errors(app)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_a_finished_run(app, finished_run, page):
    app.run()
    assert app.sidebar.selectbox(key="run_id").value == finished_run
    app.switch_page(page_path(page)).run()
    no_errors(app)


def test_datasets_page_shows_summary_and_balance(app):
    app.run().switch_page(page_path("datasets")).run()
    no_errors(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Classes"] == "10" and metrics["Input shape"] == "1 x 16 x 16"
    assert int(metrics["Train"].replace(",", "")) + int(metrics["Validation"].replace(",", "")) \
        + int(metrics["Test"].replace(",", "")) == 1797
    assert len(app.get("plotly_chart")) >= 1


def test_datasets_page_explains_a_missing_folder(app, tmp_path):
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").set_value("image-folder").run()
    app.text_input(key="ds_path").input(str(tmp_path / "nowhere")).run()
    no_errors(app)
    assert any("does not exist" in e.value for e in app.error)


def test_the_augmentation_preview_starts_from_each_datasets_own_defaults(app, image_folder):
    def shown():
        return {t.label: t.value for t in app.toggle if t.label in ("Random crop", "Horizontal flip")}
    app.run().switch_page(page_path("datasets")).run()
    assert shown() == {"Random crop": False, "Horizontal flip": False}          # digits: neither
    app.selectbox(key="ds_name").select("image-folder").run()
    app.text_input(key="ds_path").input(str(image_folder)).run()
    no_errors(app)
    assert shown() == {"Random crop": True, "Horizontal flip": True}            # a folder of photos: both
    app.selectbox(key="ds_name").select("digits").run()
    assert shown() == {"Random crop": False, "Horizontal flip": False}


def test_model_page_summary_of_a_fresh_model_and_a_checkpoint(app, finished_run):
    app.run().switch_page(page_path("model")).run()
    no_errors(app)
    params = {m.label: m.value for m in app.metric}["Parameters"]
    assert int(params.replace(",", "")) > 0
    assert len(app.dataframe) == 2        # the torchinfo table and the weight statistics
    app.radio(key="m_src").set_value("Checkpoint of the chosen run").run()
    no_errors(app)
    assert any(finished_run in c.value for c in app.caption), (
        [c.value for c in app.caption], [i.value for i in app.info], [e.value for e in app.error])


def test_train_form_rejects_bad_values_and_launches_nothing(app, tmp_path):
    app.run().switch_page(page_path("train")).run()
    version = app.session_state["form_version"]
    app.number_input(key=f"tf_digits_{version}_epochs").set_value(0)
    app.number_input(key=f"tf_digits_{version}_lr").set_value(-1.0)
    [submit] = [b for b in app.button if b.label == "Launch"]
    submit.click().run()
    no_errors(app)
    message = "\n".join(e.value for e in app.error)
    assert "Nothing was launched" in message
    assert "epochs must be >= 1, got 0" in message and "lr must be > 0, got -1" in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    app.run()                        # another run finishing reruns the page: the message stays
    assert any("Nothing was launched" in e.value for e in app.error)
    app.button(key="dismiss_launch_problems").click().run()
    assert not any("Nothing was launched" in e.value for e in app.error)


@pytest.mark.trains     # in the page's JobManager child, not through a training fixture
def test_launch_creates_a_run_that_trains(app, tmp_path):
    from core.runs.store import RunStore
    app.run().switch_page(page_path("train")).run()
    version = app.session_state["form_version"]
    app.number_input(key=f"tf_digits_{version}_epochs").set_value(1)
    app.text_input(key=f"tf_digits_{version}_name").input("from the form")
    [submit] = [b for b in app.button if b.label == "Launch"]
    submit.click().run()
    no_errors(app)
    store = RunStore(tmp_path / "runs")
    [run_id] = store.run_ids()
    assert store.read_config(run_id).name == "from the form"
    assert store.read_status(run_id)["state"] in ("queued", "running", "completed")
    assert app.session_state["run_id"] == run_id
    from pages.common import shared
    assert shared.jobs().wait_idle(120)
    app.run()
    no_errors(app)
    assert store.read_status(run_id)["state"] == "completed"
    assert any("completed" in (h.value or "") for h in app.subheader)


def test_clone_prefills_the_form(app, finished_run):
    def form_widgets():
        return [w for w in app.number_input if str(w.key).startswith("tf_")]
    app.run().switch_page(page_path("train")).run()
    assert not form_widgets()              # with runs, the form starts folded and is not drawn folded
    [clone] = [b for b in app.button if b.label == "Clone"]
    clone.click().run()
    no_errors(app)
    version = app.session_state["form_version"]       # Clone unfolds it
    assert app.number_input(key=f"tf_digits_{version}_epochs").value == 2
    assert app.text_input(key=f"tf_digits_{version}_name").value == "finished (2)"   # a new name, proposed
    assert any("Prefilled from" in i.value for i in app.info)
    app.session_state["new_run_open"] = False          # folded by the user: it stays folded
    app.run()
    assert not form_widgets()


def test_a_clone_is_proposed_the_first_free_name():
    from core.runs.summaries import clone_name
    assert clone_name("baseline", set()) == "baseline (2)"
    assert clone_name("baseline", {"baseline", "baseline (2)"}) == "baseline (3)"
    assert clone_name("baseline (3)", {"baseline (4)"}) == "baseline (5)"
    assert clone_name("lr-3e-4", set()) == "lr-3e-4 (2)"            # a name's own digits stay as they are
    assert clone_name("", {""}) == ""                              # unnamed runs stay unnamed (the id shows)


def test_compare_and_delete(app, finished_run, tmp_path, train):
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    other = store.create_run(tiny_digits(name="other", lr=1e-3))
    train(store, other)
    app.run().switch_page(page_path("train")).run()
    no_errors(app)
    assert not [w for w in app.multiselect if w.key == "cmp_runs"]     # folded, Compare draws nothing
    app.session_state["compare_open"] = True                          # unfolded
    app.run()
    assert sorted(app.multiselect(key="cmp_runs").value) == sorted([finished_run, other])
    differing = [frame.value for frame in app.dataframe if "lr" in frame.value.index]
    assert differing and sorted(differing[0].loc["lr"]) == ["0.001", "0.002"]
    assert app.session_state["run_id"] == other        # the newest run is chosen
    [confirm] = [b for b in app.button if b.label == "Yes, delete it"]
    confirm.click().run()
    no_errors(app)
    assert store.run_ids() == [finished_run]
    assert app.session_state["run_id"] == finished_run


def test_runs_page_filters_and_offers_csv(app, finished_run):
    app.run().switch_page(page_path("runs")).run()
    no_errors(app)
    [table] = [frame.value for frame in app.dataframe]
    assert table["run"].tolist() == [finished_run] and table["state"].tolist() == ["completed"]
    assert any(f"metrics of {finished_run}" in b.proto.label for b in app.get("download_button"))
    app.multiselect(key="runs_states").set_value(["failed"]).run()
    assert [frame.value for frame in app.dataframe][0].empty
    assert not app.get("download_button")


def test_evaluate_page_shows_the_report_of_the_chosen_run(app, finished_run, tmp_path):
    app.run().switch_page(page_path("evaluate")).run()
    no_errors(app)
    metrics = {m.label: m.value for m in app.metric}
    report_path = tmp_path / "runs" / finished_run / "eval" / "best-val" / "report.json"
    import json
    report = json.loads(report_path.read_text())
    assert metrics["Accuracy"] == f"{report['accuracy']:.4f}"
    assert len(app.get("plotly_chart")) >= 2
    labels = [b.proto.label for b in app.get("download_button")]
    assert "Download report (HTML)" in labels and "Per-class table as CSV" in labels
    app.radio(key="ev_split").set_value("test").run()
    no_errors(app)
    assert (tmp_path / "runs" / finished_run / "eval" / "best-test" / "report.json").exists()


def test_predict_page_predicts_and_refuses(app, finished_run):
    import io

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    buffer = io.BytesIO()
    Image.fromarray((digits.images[0] * 255 / 16).astype(np.uint8)).resize((32, 32)).save(buffer, "PNG")
    app.run().switch_page(page_path("predict")).run()
    no_errors(app)
    app.file_uploader(key="pr_files").set_value([("zero.png", buffer.getvalue(), "image/png"),
                                                  ("notes.txt", b"not a picture", "text/plain")]).run()
    no_errors(app)
    assert any("Predicted **0**" in m.value for m in app.markdown)
    assert any("notes.txt" in w.value and "not an image" in w.value for w in app.warning)
    [table] = [frame.value for frame in app.dataframe]
    assert table["file"].tolist() == ["zero.png", "notes.txt"] and table["predicted"].tolist()[0] == "0"
    assert app.dataframe[0].proto.placeholder == "–"      # the refused file's empty cells, not "None"


def test_switching_the_dataset_applies_its_defaults(app, tmp_path):
    """digits -> image-folder in the Train form: the launched config has the folder's defaults, not
    the values the digits widgets showed."""
    import json

    from conftest import write_png
    folder = tmp_path / "shapes"
    for label, value in (("dark", 20), ("light", 200)):
        (folder / label).mkdir(parents=True)
        for i in range(40):
            write_png(folder / label / f"{i}.png", value + i % 7)
    app.run().switch_page(page_path("train")).run()
    version = app.session_state["form_version"]
    app.number_input(key=f"tf_digits_{version}_epochs").set_value(3)      # a digits choice, then...
    app.selectbox(key="ds_name").set_value("image-folder").run()
    app.text_input(key="ds_path").input(str(folder)).run()
    no_errors(app)
    assert app.number_input(key=f"tf_image-folder_{version}_epochs").value == 20
    [submit] = [b for b in app.button if b.label == "Launch"]
    submit.click().run()
    no_errors(app)
    from pages.common import shared
    shared.jobs().shutdown()
    from core.runs.store import RunStore
    [run_id] = RunStore(tmp_path / "runs").run_ids()
    launched = json.loads((tmp_path / "runs" / run_id / "config.json").read_text())
    expected = proposed_config("image-folder", data_path=str(folder)).to_dict()
    assert {k: launched[k] for k in expected} == expected


def test_pages_show_an_unreadable_run_without_crashing(app, finished_run, tmp_path):
    broken = tmp_path / "runs" / "29990101-000000-broken-0000"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.json").write_text('{"epochs": ')
    (broken / "status.json").write_text("[]")
    app.run()
    assert app.sidebar.selectbox(key="run_id").value == broken.name       # the newest, still offered
    for page in PAGES:
        app.switch_page(page_path(page)).run()
        no_errors(app)
    app.switch_page(page_path("train")).run()
    assert any("cannot be read" in e.value and "config.json" in e.value for e in app.error)
    app.switch_page(page_path("runs")).run()
    [table] = [frame.value for frame in app.dataframe]
    assert set(table["state"]) == {"unreadable", "completed"}


# Run folders broken in every way found so far: each must read as what it is (or "unreadable" with
# the reason), alone, while the other runs and every page keep working.
BREAKAGES = {
    "metrics-garbage": lambda d: (d / "metrics.jsonl").write_bytes(
        b'\x00\xff garbage\n[1, 2]\n{"step": "x", "split": 5}\n"text"\n'),
    "metrics-wrong-types": lambda d: (d / "metrics.jsonl").write_text(
        '{"step": 1, "epoch": "one", "split": "val", "kind": "epoch", "loss": "nan", "acc": null}\n'),
    "best-garbage": lambda d: (d / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint"),
    "latest-torn": lambda d: (d / "checkpoints" / "latest.pt").write_bytes(b"PK\x03\x04 torn"),
    "status-a-folder": lambda d: ((d / "status.json").unlink(), (d / "status.json").mkdir()),
    "checkpoints-a-file": lambda d: (shutil.rmtree(d / "checkpoints"), (d / "checkpoints").write_text("x")),
    "status-odd-numbers": lambda d: (d / "status.json").write_text(json.dumps(
        {**json.loads((d / "status.json").read_text()), "epoch": 10**30, "step": -5, "total_steps": 0})),
}


def test_every_page_survives_run_folders_broken_in_every_way(app, finished_run, tmp_path, cli):
    runs = tmp_path / "runs"
    broken = {}
    for i, (name, breakage) in enumerate(BREAKAGES.items()):
        copy = runs / f"2999010{i}-000000-{name}-0000"
        shutil.copytree(runs / finished_run, copy)
        breakage(copy)
        broken[name] = copy.name
    app.run()
    for name, run_id in broken.items():
        app.sidebar.selectbox(key="run_id").select(run_id).run()
        for page in PAGES:
            app.switch_page(page_path(page)).run()
            assert not app.exception, (name, page, [e.value for e in app.exception])
    app.switch_page(page_path("runs")).run()
    [table] = [frame.value for frame in app.dataframe if "state" in frame.value]
    states = dict(zip(table["run_id"], table["state"])) if "run_id" in table else None
    assert len(table) == len(BREAKAGES) + 1 and "completed" in set(table["state"])
    assert "unreadable" in set(table["state"])        # status.json as a folder
    listing = cli("runs", runs=runs)
    assert listing.returncode == 0 and finished_run in listing.stdout
    assert all(run_id in listing.stdout for run_id in broken.values()), states
    for run_id in broken.values():
        assert cli("show", run_id, runs=runs).returncode in (0, 2)


def test_the_run_picker_shows_names_and_ids(app, finished_run):
    app.run()
    picker = app.sidebar.selectbox(key="run_id")
    assert picker.options == [f"finished · {finished_run}"] and picker.label == "Run (1)"


def test_the_run_picker_is_searchable_past_its_limit(app, tmp_path, monkeypatch):
    from core.config import RunConfig
    from core.runs.store import RunStore
    from pages.common import shared
    monkeypatch.setattr(shared, "PICKER_LIMIT", 5)
    store = RunStore(tmp_path / "runs")
    ids = [store.create_run(RunConfig(name=f"trial {i}" if i != 3 else "the odd one")) for i in range(8)]
    app.run()
    picker = app.sidebar.selectbox(key="run_id")
    assert len(picker.options) == 5 and picker.label == "Run (8)"
    app.sidebar.text_input(key="run_search").input("ODD").run()
    no_errors(app)
    picker = app.sidebar.selectbox(key="run_id")
    assert f"the odd one · {ids[3]}" in picker.options and len(picker.options) <= 2    # it, and the chosen run
    picker.set_value(ids[3]).run()
    assert app.session_state["run_id"] == ids[3]


def test_the_dataset_chosen_on_one_page_is_the_one_on_the_next(app, image_folder):
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").select("image-folder").run()
    app.text_input(key="ds_path").input(str(image_folder)).run()
    app.number_input(key="ds_size_image-folder").set_value(20).run()
    app.switch_page(page_path("runs")).run()          # a page without the picker clears its widgets' state
    app.switch_page(page_path("train")).run()
    no_errors(app)
    assert app.selectbox(key="ds_name").value == "image-folder"
    assert app.text_input(key="ds_path").value == str(image_folder)
    assert app.number_input(key="ds_size_image-folder").value == 20


@pytest.fixture
def two_runs(tmp_path, train):
    """Two finished runs; the newer one is what a page picks by default."""
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    ids = []
    for name in ("first", "second"):     # ids start with the time, then the name
        ids.append(store.create_run(tiny_digits(name=name, epochs=1)))
        assert train(store, ids[-1]) == "completed"
    return ids


def test_a_link_opens_its_run_and_dataset(app, two_runs):
    older, newer = two_runs
    app.query_params = {"run": older, "dataset": "mnist"}
    app.run().switch_page(page_path("train")).run()
    no_errors(app)
    assert app.sidebar.selectbox(key="run_id").value == older
    assert any("first" in (h.value or "") for h in app.subheader)
    app.session_state["new_run_open"] = True          # the form (and its dataset picker) unfolded
    app.run()
    assert app.selectbox(key="ds_name").value == "mnist"


def test_the_address_bar_names_the_chosen_run_and_dataset(app, two_runs):
    older, newer = two_runs
    app.run()
    # No dataset picked yet: the address names none (not the default digits beside a run of another).
    assert app.query_params["run"] == newer and "dataset" not in app.query_params
    app.sidebar.selectbox(key="run_id").set_value(older).run()
    assert app.query_params["run"] == older
    app.switch_page(page_path("evaluate")).run()       # a page switch clears the parameters: put back
    no_errors(app)
    assert app.query_params["run"] == older and "dataset" not in app.query_params
    app.switch_page(page_path("datasets")).run()       # the picker drawn: its dataset is a choice now
    assert app.query_params["run"] == older and app.query_params["dataset"] == "digits"


def test_a_link_to_a_run_that_is_gone_keeps_the_default(app, two_runs):
    app.query_params = {"run": "20200101-000000-gone-0000", "dataset": "no-such-set"}
    app.run()
    no_errors(app)
    assert app.sidebar.selectbox(key="run_id").value == two_runs[1]
    assert app.query_params["run"] == two_runs[1] and "dataset" not in app.query_params


@pytest.mark.parametrize("dataset", ["digits", "mnist", "fashion-mnist", "cifar10"])
def test_the_form_starts_from_the_settings_the_cli_uses(app, dataset, monkeypatch):
    """Picking a dataset applies its defaults at once, and they are the CLI's, setting by setting."""
    import core.data.datasets
    from core.__main__ import build_parser
    from core.cli.runs import launch_config
    from core.config import SETTINGS
    monkeypatch.setattr(core.data.datasets, "validate_run_config", lambda config: [])    # no data files needed here
    cli = launch_config(build_parser().parse_args(["train", "--dataset", dataset]))
    app.run().switch_page(page_path("train")).run()
    app.selectbox(key="ds_name").set_value(dataset).run()
    no_errors(app)
    version = app.session_state["form_version"]
    shown = {}
    for widget in (*app.number_input, *app.selectbox, *app.checkbox, *app.text_input):
        prefix = f"tf_{dataset}_{version}_"
        if widget.key and widget.key.startswith(prefix):
            shown[widget.key.removeprefix(prefix)] = widget.value
    shown["image_size"] = app.number_input(key=f"ds_size_{dataset}").value
    shown["channels"] = app.selectbox(key=f"ds_channels_{dataset}").value
    shown["model"] = app.selectbox(key="ds_model").value
    assert {"epochs", "batch_size", "lr", "model", "optimizer"} <= set(shown)
    differing = {name: (value, getattr(cli, name)) for name, value in shown.items()
                 if name in SETTINGS and name != "name" and value != getattr(cli, name)}
    assert not differing


def test_the_model_picked_on_one_page_is_the_one_on_the_other_and_in_the_link(app):
    app.run().switch_page(page_path("model")).run()
    app.selectbox(key="m_arch").set_value("mlp").run()
    no_errors(app)
    app.switch_page(page_path("train")).run()
    no_errors(app)
    assert app.selectbox(key="ds_model").value == "mlp"
    assert app.query_params["model"] == "mlp"
    app.selectbox(key="ds_model").set_value("resnet18").run()
    app.switch_page(page_path("model")).run()
    assert app.selectbox(key="m_arch").value == "resnet18"


def test_a_link_names_the_model(app):
    app.query_params = {"model": "resnet18", "dataset": "digits"}
    app.run().switch_page(page_path("train")).run()
    no_errors(app)
    assert app.selectbox(key="ds_model").value == "resnet18"


def test_the_runs_table_changes_only_when_what_it_shows_does(finished_run, tmp_path):
    # An unchanged table is not redrawn by the browser: progress is kept to the whole percent shown,
    # an active run's duration to 10 s steps.
    import dataclasses

    from core.runs.store import RunStore
    from pages.common import shared
    summary = RunStore(tmp_path / "runs").summary(finished_run)
    running = dataclasses.replace(summary, state="running", progress=0.12345, duration_s=127.9)
    frame = shared.runs_frame([running])
    assert frame["progress"][0] == 0.12 and frame["duration"][0] == 120.0
    assert shared.runs_frame([dataclasses.replace(running, progress=0.1249, duration_s=129.5)]).equals(frame)
    assert shared.runs_frame([summary])["duration"][0] == summary.duration_s      # a finished run's as it is


def test_home_links_every_other_page(app):
    app.run()
    no_errors(app)
    linked = {element.proto.page for element in app.get("page_link")}
    assert set(PAGES[1:]) <= \
        {page.rsplit("/", 1)[-1].removesuffix(".py") for page in linked}, linked
