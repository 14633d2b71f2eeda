"""Small file helpers: atomic directory and file writes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(target: str | Path):
    """Yield a staging directory that replaces `target` only if the block finishes.

    A crash mid-write leaves the previous `target` untouched, so a checkpoint or
    adapter on disk is always a complete one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_safetensors(directory: Path, config_name: str, weights_name: str, error: type, fix: str) -> dict:
    """The tensors of `directory/weights_name` (an adapter's or an encoder's, beside its `config_name`), or `error`
    naming the file: missing, or not a readable safetensors file (then `fix`)."""
    from safetensors.torch import load_file

    weights_path = Path(directory) / weights_name
    if not weights_path.exists():
        raise error(f"{directory} has {config_name} but no {weights_name}; copy the whole folder")
    try:
        return load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types for a truncated or foreign file
        raise error(f"{weights_path} is not a readable safetensors file ({err}); {fix}") from err


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
