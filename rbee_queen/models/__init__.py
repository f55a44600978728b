"""Models: the served-name catalog, which models each node holds, and moving
model files (hub downloads, copies between nodes, removal)."""
