"""The dashboard's pages, in the order and sections the sidebar shows them: one list that the frame's
navigation, the Home page's links, the Runs page's jump to Train and the tests all read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Page:
    name: str        # its file, pages/<name>.py, and its address, /<name>
    title: str
    icon: str
    section: str
    link: str = ""   # what the Home page says of it


PAGES = (
    Page("home", "Home", ":material/home:", "Data and model"),
    Page("datasets", "Datasets", ":material/photo_library:", "Data and model", "what is in my data?"),
    Page("model", "Model", ":material/account_tree:", "Data and model", "layers, parameters, weights"),
    Page("train", "Train", ":material/model_training:", "Training", "launch and watch a run"),
    Page("runs", "Runs", ":material/table_rows:", "Training", "every run, filter, download metrics"),
    Page("insight", "Insight", ":material/stacked_line_chart:", "Training",
         "gradient flow, weight histograms, dead units, live"),
    Page("evaluate", "Evaluate", ":material/insights:", "Results", "confusion matrix, ROC/PR, report"),
    Page("projector", "Projector", ":material/scatter_plot:", "Results",
         "what the model learned: its features in 2-D, neighbours, Grad-CAM"),
    Page("predict", "Predict", ":material/image_search:", "Results", "drop images, see the top classes"),
)


def page_path(name: str) -> str:
    """The page's script as Streamlit's navigation knows it (absolute: the frame is not beside it)."""
    if name not in {page.name for page in PAGES}:
        raise ValueError(f"no page {name!r}")
    return str(PAGES_DIR / f"{name}.py")
