"""The recompute pipeline: the queue (this issue) and, later, the workers that drain it."""
