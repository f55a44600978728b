"""rbee_hive: the node-side helper. Standard library only."""
