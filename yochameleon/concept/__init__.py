"""Personalized tokens (identifier + generation + understanding tokens) and the adapter file format."""
