"""The run store: one folder per run (config, status, metrics, checkpoints and the files derived from
them), its states, the lease that keeps one process per run, and live reading of its metrics."""
