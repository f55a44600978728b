"""Nodes: the inventory, their health and status, checks before adding one, and
the worker venv a node gets."""
