"""Prepare a concept without training: `python -m yochameleon.prepare +concept=<name>`.

Training runs the same preparation (yochameleon.data.preparation) automatically; this command
shows it on its own: retrieval of hard and easy negatives, soft-positive tiers, generated QA
pairs and the contact sheets, cached under `${cache_dir}/prepared/`.
"""

from __future__ import annotations

import sys

from yochameleon.data.preparation import prepare_concept
from yochameleon.errors import YoChameleonError


def main() -> None:
    """Hydra entry point: python -m yochameleon.prepare +concept=<name>."""
    from omegaconf import DictConfig

    from yochameleon.config import hydra_command, register_resolvers
    from yochameleon.schema import TrainConfig

    register_resolvers()

    @hydra_command("train", TrainConfig)
    def run(cfg: DictConfig) -> None:
        if cfg.get("concept") is None:
            print("error: no concept given. Run `python -m yochameleon.prepare +concept=<name>`.", file=sys.stderr)
            sys.exit(2)
        import time

        from yochameleon.data.concept import ConceptData
        from yochameleon.sources import load_configured_backbone

        try:
            concept = ConceptData.from_config(cfg.concept)
            backbone = load_configured_backbone(cfg.model, cfg.cache_dir)
            start = time.perf_counter()
            prep = prepare_concept(cfg, concept, backbone, cfg.cache_dir)
        except YoChameleonError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        print(f"prepared <{concept.name}> in {time.perf_counter() - start:.2f} s "
              f"({'from cache' if prep.from_cache else 'computed'}): {len(prep.hard_negatives)} hard negatives, "
              f"{len(prep.easy_negatives)} easy negatives, {len(prep.soft_positives)} soft positives, "
              f"{len(prep.conversations)} generated QA pairs")
        print(f"  manifest        {prep.directory / 'manifest.json'}")
        for sheet in sorted(prep.directory.glob("sheet_*.png")):
            print(f"  contact sheet   {sheet}")

    run()


if __name__ == "__main__":
    main()
