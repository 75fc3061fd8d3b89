"""Analysis of runs and checkpoints: evaluation and its metrics, diagnosis, probe insight, charts,
the HTML report, and TensorBoard export."""
