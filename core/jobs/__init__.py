"""Jobs: the queue that runs training in supervised child processes."""
