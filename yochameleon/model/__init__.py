"""Backbone families (Chameleon, Janus): loading, chat layouts, token facts, image codecs, the VQ decoder."""
