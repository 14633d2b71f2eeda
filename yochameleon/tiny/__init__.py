"""Small random backbones built on this machine for tests, the demo and CPU benchmarks.

`chameleon` builds the tiny Chameleon and `janus` the tiny Janus-Pro. They are backbone
sources, not facts of a family: they sit above `model/` (the family facts they lay out) and
`data/` (the prompt templates their BPE is trained on), so neither of those imports them.
"""
