"""A self-contained HTML evaluation report of a run's checkpoint on a split: the run's settings, its
dataset and model, the training curves, the headline figures, the per-class table, the evaluation
charts and the most confident mistakes as small inline PNGs. plotly.js is inlined once (~4.6 MB,
most of the file), so the report opens offline and can be mailed as it is.
"""
from __future__ import annotations

import base64
import html
import time

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from core.analysis import plots
from core.analysis.gallery import TILES_CSS, tiles_html

REPORT_MISTAKES = 48        # the most confident misclassified samples shown as thumbnails


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return html.escape(str(value))


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    """Rows as a table: without a header, each row's first cell is its heading. Numbers align right."""
    def cell(value, heading: bool) -> str:
        tag = "th" if heading else "td"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f'<{tag}{" class=n" if number else ""}>{_fmt(value)}</{tag}>'
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(value, not header and i == 0) for i, value in enumerate(cells)) + "</tr>"
                   for cells in rows)
    return f"<table>{head}{body}</table>"


def _as_float32(value):
    """A typed array as plotly writes one ({'dtype': 'f8', 'bdata': base64}) in float32; else as it is."""
    if isinstance(value, dict) and value.get("dtype") == "f8" and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), np.float64).astype(np.float32)
        return {**value, "dtype": "f4", "bdata": base64.b64encode(data.tobytes()).decode("ascii")}
    return value


def _chart_html(figure: go.Figure, with_plotly_js: bool) -> str:
    """A figure as an HTML fragment, its coordinates in float32: 4 bytes a value draw the same curve
    as 8, and the ROC and PR curves are most of the report after plotly.js."""
    spec = figure.to_plotly_json()
    for trace in spec["data"]:
        if trace.get("type") == "heatmap":
            # The confusion heatmap reverses its scale for the page, where Streamlit's theme swaps in
            # colours that run dark to light; here plotly's own Blues run light to dark, unreversed.
            trace["reversescale"] = False
        for key in ("x", "y", "z"):
            if key in trace:
                trace[key] = _as_float32(trace[key])
    return pio.to_html(spec, full_html=False, include_plotlyjs="inline" if with_plotly_js else False,
                       config={"responsive": True})


def training_series(metrics_path) -> dict:
    """The loss and accuracy series of a run's metrics.jsonl, as plots.training_curves takes them."""
    from core.analysis.series import training_series as series_of
    from core.runs.live import LiveMetrics
    live = LiveMetrics(metrics_path)
    live.refresh()
    return series_of(live)


def settings_rows(config) -> list[tuple]:
    """(label, name, value) of every setting, in the order the Train form shows them."""
    from core.config import SETTINGS
    values = config.to_dict()
    return [(setting.label, name, str(values[name])) for name, setting in SETTINGS.items()]   # as written: 0.002


def dataset_rows(config, checkpoint: dict, report: dict) -> list[tuple]:
    from core.config import FOLDER_DATASETS
    from core.data.datasets import count_split_sizes
    rows = [("dataset", config.dataset)]
    if config.dataset in FOLDER_DATASETS:
        rows.append(("folder", config.data_path))
    classes = checkpoint["classes"]
    rows += [("classes", f"{len(classes)}: " + ", ".join(classes[:50]) + (", …" if len(classes) > 50 else "")),
             ("input shape", " x ".join(map(str, checkpoint["input_shape"])))]
    try:
        sizes = count_split_sizes(config)
        rows.append(("samples per split", ", ".join(f"{name} {n:,}" for name, n in sizes.items())))
    except Exception as error:      # the data moved since training: the report still says the rest
        rows.append(("samples per split", f"unknown ({error})"))
    rows += [("evaluated on", f"{report['split']} ({report['samples']:,} samples)"),
             ("mean", ", ".join(f"{v:.4f}" for v in checkpoint["mean"])),
             ("std", ", ".join(f"{v:.4f}" for v in checkpoint["std"]))]
    return rows


def model_rows(checkpoint_path, model, checkpoint: dict) -> list[tuple]:
    from core.models.registry import MODEL_SPECS, parameter_counts
    name = checkpoint["config"]["model"]
    counts = parameter_counts(model)
    spec = MODEL_SPECS.get(name)
    return [("model", f"{name} ({spec.label})" if spec else name),
            ("parameters", f"{counts['total']:,}"),
            ("checkpoint", f"{checkpoint_path.name}, {checkpoint_path.stat().st_size / 1024**2:.2f} MB, "
                           f"epoch {checkpoint['loop']['epoch']}, step {checkpoint['loop']['step']}")]


def evaluation_html(store, run_id: str, checkpoint: str = "best", split: str = "val", *, split_data=None,
                    title: str | None = None) -> str:
    """The report as one HTML string. split_data: the split's samples when the caller holds them
    (the Evaluate page), else the dataset is loaded for the thumbnails."""
    from core.analysis.evaluate import evaluate_run, misclassified_rows, prediction_tiles
    from core.analysis.metrics import curves
    from core.data.datasets import load_dataset
    from core.runs.checkpoint import load_model
    report, arrays = evaluate_run(store, run_id, checkpoint, split)
    config = store.read_config(run_id)
    path = store.checkpoint_path(run_id, checkpoint)
    model, loaded = load_model(path)
    if split_data is None:
        split_data = load_dataset(config).splits[split]
    name = store.summary(run_id).name or run_id
    title = title or f"Trainboard evaluation: {name}"

    series = training_series(store.metrics_path(run_id))
    figures = [plots.confusion_heatmap(report["confusion_matrix"], report["classes"])]
    if any(series.values()):
        figures.insert(0, plots.training_curves(series))
    curve_points = curves(arrays["probs"], arrays["labels"])
    figures += [plots.roc_figure(curve_points, report), plots.pr_figure(curve_points, report),
                plots.reliability_figure(report["reliability"], report["expected_calibration_error"])]
    wrong = misclassified_rows(arrays)
    tiles = prediction_tiles(wrong[:REPORT_MISTAKES], arrays, report["classes"], split_data, names=True,
                             root=config.data_path)
    mistakes = (f"<p>The {len(tiles)} most confident of {len(wrong):,} misclassified samples "
                f"(true → predicted, confidence; file or index in the split).</p>{tiles_html(tiles, with_style=False)}"
                if len(wrong) else "<p>No misclassified samples.</p>")
    return _document(title, report, run_id, settings_rows(config), dataset_rows(config, loaded, report),
                     model_rows(path, model, loaded), figures, has_curves=any(series.values()), mistakes=mistakes)


def _document(title: str, report: dict, run_id: str, settings: list[tuple], dataset: list[tuple],
              model: list[tuple], figures: list[go.Figure], has_curves: bool, mistakes: str) -> str:
    headline = [("samples", report["samples"]), ("accuracy", report["accuracy"]), ("loss", report["loss"]),
                ("macro F1", report["macro"]["f1"]), ("weighted F1", report["weighted"]["f1"]),
                ("macro ROC AUC", report["macro"]["roc_auc"]), ("micro ROC AUC", report["micro"]["roc_auc"]),
                ("macro AP", report["macro"]["average_precision"]),
                ("expected calibration error", report["expected_calibration_error"])]
    columns = ("class", "precision", "recall", "f1", "support", "roc_auc", "average_precision")
    per_class = [tuple(row[c] for c in columns) + ((row["best_f1_threshold"] or {}).get("threshold"),)
                 for row in report["per_class"]]
    charts = [_chart_html(figure, with_plotly_js=i == 0) for i, figure in enumerate(figures)]
    curves_html = charts.pop(0) if has_curves else "<p>No training metrics were found in the run folder.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1f2430}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ddd;padding:4px 10px;text-align:left}}
th{{background:#f4f6fa;font-weight:600}}.n{{text-align:right;font-variant-numeric:tabular-nums}}
.facts{{display:flex;flex-wrap:wrap;gap:0 2rem;align-items:flex-start}}code{{font-size:90%}}
{TILES_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Run <code>{html.escape(run_id)}</code>: checkpoint {html.escape(str(report.get('checkpoint_name')))}.pt
(epoch {report.get('epoch')}, step {report.get('step')}) on the {html.escape(str(report.get('split')))} split.
Generated by Trainboard on {time.strftime('%Y-%m-%d %H:%M')}.</p>
<h2>Headline</h2>{_table(headline)}
<div class="facts"><div><h2>Dataset</h2>{_table(dataset)}</div><div><h2>Model</h2>{_table(model)}</div></div>
<h2>Training curves</h2>{curves_html}
<h2>Per class</h2>{_table(per_class, columns + ("max-F1 threshold",))}
<h2>Charts</h2>{''.join(charts)}
<h2>Misclassified, most confident first</h2>{mistakes}
<h2>Run settings</h2>{_table(settings, ("setting", "name", "value"))}
</body></html>"""


__all__ = ["REPORT_MISTAKES", "evaluation_html", "training_series"]
