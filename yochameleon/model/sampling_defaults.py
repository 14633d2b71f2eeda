"""A backbone's image-sampling defaults: what its checkpoint records, else its family's.

One part of a backbone family (`Backbone.sampling_defaults`); Janus's version, whose guidance
comes from its generation_config, is `model/janus_facts.py`.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from yochameleon.errors import YoChameleonError
from yochameleon.model.image_generation import SamplingConfig

SAMPLING_KEYS = ("temperature", "top_k", "top_p", "guidance_scale")


class SamplingDefaults:
    """Image-token sampling settings of the checkpoint in `path`, each one as asked for or defaulted."""

    default_guidance = 1.0  # classifier-free guidance when none is asked for: off, as Anole samples

    def __init__(self, path: Path):
        self.path = path

    @cached_property
    def recorded_sampling(self) -> dict:
        """`image_sampling` of the checkpoint's generation_config.json ({} when absent): image-sampling
        defaults a build records there (transformers' GenerationConfig does not keep unknown keys)."""
        file = Path(self.path) / "generation_config.json"
        recorded = json.loads(file.read_text()).get("image_sampling") if file.is_file() else None
        unknown = set(recorded or {}) - set(SAMPLING_KEYS)
        if unknown:
            raise YoChameleonError(f"{file}: image_sampling has unknown keys {sorted(unknown)}; "
                                   "use temperature, top_k, top_p, guidance_scale")
        return dict(recorded or {})

    def sampling(self, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 guidance_scale: float | None = None) -> SamplingConfig:
        """Image-token sampling settings: each one asked for, or for None the backbone's default.

        The defaults are the checkpoint's recorded ones (`recorded_sampling`) when it has them (the
        toy-world backbone records the settings its drawing was measured with), else temperature 1,
        no top-k / top-p filter and the family's guidance (Chameleon: off, as Anole samples; Janus:
        its generation_config's scale)."""
        defaults = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "guidance_scale": self.default_guidance,
                    **self.recorded_sampling}
        asked = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "guidance_scale": guidance_scale}
        chosen = {k: defaults[k] if v is None else v for k, v in asked.items()}
        config = SamplingConfig(float(chosen["temperature"]), int(chosen["top_k"]), float(chosen["top_p"]),
                                float(chosen["guidance_scale"]))
        config.validate()
        return config

    def guidance(self, scale: float | None) -> float:
        """A classifier-free guidance scale as asked for, or the backbone's default for None."""
        return self.sampling(guidance_scale=scale).guidance_scale
