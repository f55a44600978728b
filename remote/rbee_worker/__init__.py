"""rbee_worker: one inference server per (model, device) on a node."""
