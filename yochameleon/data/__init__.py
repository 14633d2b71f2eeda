"""Concept data: image loading and validation, prompt templates, conversations, samples, VQ-code cache."""
