"""Backbone loading, the tiny test model, the VQ image decoder and image-token helpers."""
