"""`python -m evaluation.compare` is `python -m yochameleon.compare`: one tool compares training runs and evaluations.

    python -m evaluation.compare outputs/eval/corgi/* [--out comparison] [--wandb]
"""

from __future__ import annotations

import sys

from yochameleon.compare import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
