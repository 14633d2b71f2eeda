"""The toy world's trained concept encoder, shipped beside the backbone's pack.

    python -m yochameleon.toyworld.encoder_pack outputs/encoders/encoder/best   (= make toyworld-encoder)

copies an encoder chosen on the validation identities into `yochameleon/assets/toyworld/encoder/` (2.4 MB), with
its record of the backbone made portable (the toy-world source, no path of the machine it was trained on) and
the run's facts (steps, validation score, test figures, wall time) beside it. `${asset:toyworld/encoder}` is the
directory; `answer` / `generate --encoder`, `PersonalizedModel.load(encoder=...)` and the harness take it as is.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from yochameleon.concept.encoder import ENCODER_CONFIG, ENCODER_WEIGHTS, read_encoder_config
from yochameleon.io import atomic_dir

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "toyworld" / "encoder"


def ship_encoder(source: str | Path, target: Path = SHIPPED) -> Path:
    """Copy an encoder directory into the package, its backbone record without machine paths; the training run's
    summary (two folders up: <run>/best -> <run>/summary.json) goes along as `training.json` when there is one."""
    source = Path(source)
    _, raw = read_encoder_config(source)  # refuses a folder that is not an encoder
    if raw["base_model"].get("source") != "toyworld":
        raise SystemExit(f"error: {source} was trained on {raw['base_model'].get('name')!r}, not the toy world")
    raw["base_model"] = {k: v for k, v in raw["base_model"].items() if k != "path"}
    summary = source.parent / "summary.json"
    with atomic_dir(target) as staging:
        shutil.copyfile(source / ENCODER_WEIGHTS, staging / ENCODER_WEIGHTS)
        (staging / ENCODER_CONFIG).write_text(json.dumps(raw, indent=2) + "\n")
        if summary.exists():
            facts = json.loads(summary.read_text())
            for split in facts.get("test", {}).values():
                split.pop("per_concept", None)
            facts = {k: v for k, v in facts.items() if k not in ("encoder", "chosen", "metrics", "wandb")}
            (staging / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m yochameleon.toyworld.encoder_pack <encoder dir, e.g. <run>/best>")
    print(ship_encoder(sys.argv[1]))
