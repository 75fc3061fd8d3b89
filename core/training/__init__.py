"""Training: the loop (Trainer), its callbacks and probes, the LR finder, and the worker that runs one run
to its end in a process."""
