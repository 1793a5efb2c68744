"""Deterministic synthetic local-authority population with agency extracts and ground truth."""
