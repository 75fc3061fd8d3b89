"""The Insight page and the shaping of probe records behind it."""

from conftest import no_errors, tiny_digits
from core.analysis import insight
from pages.common.site import page_path


def record(step, layers, activations=None):
    return {"step": step, "epoch": 1, "layers": layers, "activations": activations or {}}


def stats(low, high, hist, norm=1.0):
    return {"min": low, "max": high, "hist": hist, "norm": norm, "mean": 0.0}


def test_histograms_over_time_share_bins_and_keep_every_count():
    probes = [record(10, {"fc": {"weight": stats(-1.0, 1.0, [1, 2, 3, 4])}}),
              record(20, {"fc": {"weight": stats(-3.0, 0.0, [5, 0, 0, 5])}})]
    steps, edges, counts = insight.histograms_over_time(probes, "fc", "weight", bins=6)
    assert steps.tolist() == [10, 20] and edges[0] == -3.0 and edges[-1] == 1.0 and counts.shape == (2, 6)
    assert counts.sum(axis=1).tolist() == [10, 10]
    assert counts[1, 0] == 5 and counts[0, 0] == 0          # the second step's lowest values, alone at -3
    assert insight.histograms_over_time(probes, "fc", "grad") is None


def test_layers_that_move_most_come_first():
    probes = [record(10, {"a": {"weight": stats(0, 1, [1]), "update_ratio": 1e-4},
                          "b": {"weight": stats(0, 1, [1]), "update_ratio": 1e-2},
                          "c": {"weight": stats(0, 1, [1]), "update_ratio": None}})]
    assert insight.layer_names(probes) == ["a", "b", "c"]
    assert insight.movers(probes) == ["b", "a", "c"]


def test_the_insight_page_draws_a_runs_probes_and_says_what_is_missing(store, app, train):
    run_id = store.create_run(tiny_digits(epochs=2))
    assert train(store, run_id) == "completed"
    app.run().switch_page(page_path("insight")).run()
    no_errors(app)
    [layers] = app.multiselect
    assert len(layers.value) == 3 and layers.options[0] in layers.value
    titles = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert any("Gradient flow" in t for t in titles) and any("Update-to-weight" in t for t in titles)
    assert sum("over time" in t for t in titles) == 6            # weights and gradients of 3 layers
    assert any("Dead ReLU units" in t for t in titles)
    store.probes_path(run_id).unlink()                          # a run from before probes
    app.switch_page(page_path("insight")).run()
    no_errors(app)
    assert any("has no probes" in i.value and "before" in i.value for i in app.info)
