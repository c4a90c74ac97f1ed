"""Per-model-family queues. For now: the model-family table that keys and queues are named by."""
