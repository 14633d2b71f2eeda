"""The cached toy-world backbone: the orchestrator on top of the toy world.

    python -m yochameleon.toyworld.build        (= make toyworld; prints the knowledge report)

The backbone is pretrained once per (spec, code) and kept in the cache under
`models/toyworld-<key>` (or unpacked there from the shipped pack); toy concepts are
rendered by `concepts.py`. Nothing else in the toy world imports this module.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from yochameleon.model.load import load_backbone
from yochameleon.toyworld.judge import load_judge
from yochameleon.toyworld.knowledge import knowledge_report
from yochameleon.toyworld.pretrain import build_toyworld_checkpoint
from yochameleon.toyworld.ship import packed_key, unpack
from yochameleon.toyworld.spec import toyworld_dir

log = logging.getLogger(__name__)

KNOWLEDGE_FILE = "toyworld_knowledge.json"


def ensure_toyworld_checkpoint(cache_dir: str | Path | None = None, spec: dict | None = None,
                               show_progress: bool = True) -> Path:
    """The cached toy backbone: unpacked from the shipped weights, or pretrained on first use."""
    target = toyworld_dir(cache_dir, spec)
    if not (target / "config.json").exists() and packed_key() == target.name.removeprefix("toyworld-"):
        log.info("unpacking the shipped toy-world backbone into %s", target)
        unpack(target)
    if not (target / "config.json").exists():
        log.warning("pretraining the toy-world backbone into %s (once, about 40 minutes on 2 CPU cores; "
                    "cached afterwards)", target)
        build_toyworld_checkpoint(target, spec, show_progress=show_progress)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pretrain (once) and report the toy-world backbone.")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--n", type=int, default=60, help="held-out cases per knowledge figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = ensure_toyworld_checkpoint(args.cache_dir)
    report_file = path / KNOWLEDGE_FILE
    if not report_file.exists():
        backbone = load_backbone(path, name="toyworld")
        report = knowledge_report(backbone, load_judge(path), n=args.n)
        build = json.loads((path / "toyworld_build.json").read_text())
        report_file.write_text(json.dumps({**build, **report}, indent=2))
    print(f"toy-world backbone: {path}")
    print(report_file.read_text())


if __name__ == "__main__":
    main()
