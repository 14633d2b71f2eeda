"""Metrics computed from logits: recognition accuracy (more in the evaluation harness)."""
