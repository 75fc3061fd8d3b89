"""The Runs page through AppTest: the key settings, test accuracy, tags and note as columns; the tag
filter; editing tags and the note; a click on a row opens that run on the Train page."""
import pytest

from conftest import no_errors, tiny_digits
from core.runs.annotations import annotate, read_annotations
from pages.common.site import page_path
from test_charts import written_run


@pytest.fixture
def runs(tmp_path):
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    plain = written_run(store, "plain", 1)
    tagged = store.create_run(tiny_digits(name="tagged", batch_size=32, lr=3e-4, optimizer="sgd", aug_flip=True))
    annotate(store, tagged, tags=["sweep", "cnn"], note="lr too low?")
    return store, plain, tagged


def table(app):
    [frame] = [f.value for f in app.dataframe if "run" in f.value.columns]
    return frame


def test_runs_table_shows_settings_tags_note_and_filters_by_tag(app, runs):
    store, plain, tagged = runs
    app.run().switch_page(page_path("runs")).run()
    no_errors(app)
    frame = table(app).set_index("run")
    for column in ("test acc", "best val acc", "model", "dataset", "batch size", "lr", "optimizer", "augmentation",
                   "tags", "note"):
        assert column in frame.columns, column
    row = frame.loc[tagged]
    assert (row["batch size"], row["lr"], row["optimizer"], row["augmentation"]) == (32, 3e-4, "sgd", "Horizontal flip")
    assert list(row["tags"]) == ["cnn", "sweep"] and row["note"] == "lr too low?"
    assert list(frame.loc[plain, "tags"]) == [] and frame.loc[plain, "augmentation"] == "none"
    # A run never evaluated has no test acc: the cell says "–", not Streamlit's grey "None".
    assert frame["test acc"].isna().all()
    [proto] = [f.proto for f in app.dataframe if "run" in f.value.columns]
    assert proto.placeholder == "–"
    unnamed = store.create_run(tiny_digits())
    app.run()
    assert table(app).set_index("run").loc[unnamed, "name"] == unnamed     # told apart by its id
    app.multiselect(key="runs_tags").set_value(["sweep"]).run()
    no_errors(app)
    assert table(app)["run"].tolist() == [tagged]
    assert any("tagged sweep" in c.value for c in app.caption)


def test_tags_and_note_are_edited_for_the_chosen_run(app, runs):
    store, plain, tagged = runs
    app.run()
    app.sidebar.selectbox(key="run_id").set_value(plain).run()
    app.switch_page(page_path("runs")).run()
    app.multiselect(key=f"tags_{plain}").set_value(["baseline"])
    app.text_area(key=f"note_{plain}").input("the reference")
    [save] = [b for b in app.button if b.label == "Save tags and note"]
    save.click().run()
    no_errors(app)
    assert read_annotations(store, plain) == {"tags": ["baseline"], "note": "the reference"}
    assert list(table(app).set_index("run").loc[plain, "tags"]) == ["baseline"]       # the table shows them at once
    app.multiselect(key=f"tags_{plain}").set_value(["bad,tag"])
    [save] = [b for b in app.button if b.label == "Save tags and note"]
    save.click().run()
    assert any("Nothing was saved" in e.value and "comma" in e.value for e in app.error)
    assert read_annotations(store, plain)["tags"] == ["baseline"]


@pytest.mark.parametrize("clicked", ["row box", "cell"])
def test_clicking_a_row_opens_the_run_on_the_train_page(app, runs, clicked):
    store, plain, tagged = runs
    app.run()
    assert app.session_state["run_id"] == tagged                     # the newest run is chosen
    app.switch_page(page_path("runs")).run()
    position = table(app)["run"].tolist().index(plain)
    # What the browser sends when a row is clicked: the table's selection (tests/test_browser_runs.py clicks).
    selection = {"rows": [position]} if clicked == "row box" else {"cells": [[position, "name"]]}
    app.session_state["runs_table_0"] = {"selection": {"rows": [], "columns": [], "cells": [], **selection}}
    app.run()
    no_errors(app)
    assert app.session_state["run_id"] == plain
    assert any(h.value.startswith("Run plain") for h in app.subheader)        # the Train page's run header
    app.switch_page(page_path("runs")).run()                                    # back: no row still selected
    no_errors(app)
    assert app.session_state["run_id"] == plain and table(app)["run"].tolist()
