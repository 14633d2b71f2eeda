"""A Chameleon checkpoint's token facts: its special ids, reserved ids, image tokens and vocabulary.

One part of a backbone family (`Backbone.token_facts`); Janus's version is `model/janus_facts.py`.
Every id is read from the checkpoint's `vocabulary_map`, never hard-coded.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from yochameleon.errors import BackboneError


class ImageTokenMap:
    """Vocabulary ids of image tokens <-> VQ codebook indices, from the checkpoint's vocabulary_map."""

    def __init__(self, codes: torch.Tensor, ids: torch.Tensor, vocab_size: int):
        # `vocab_size`: the width of the logits, image ids included.
        self.code_to_id = torch.full((int(codes.max()) + 1,), -1, dtype=torch.long)
        self.code_to_id[codes] = ids
        self.id_to_code = torch.full((vocab_size,), -1, dtype=torch.long)
        self.id_to_code[ids] = codes
        self.is_image_token = self.id_to_code >= 0  # (vocab,) bool
        self.image_token_ids = ids

    @classmethod
    def from_vocabulary_map(cls, vocabulary_map: dict[str, int], vocab_size: int,
                            num_codes: int | None = None) -> "ImageTokenMap":
        """Chameleon's map: code c is the token named IMGIMG<c in letters>Z."""
        # A codebook smaller than the IMGIMG range (the toy-world backbone) uses the first ids only.
        def code_of(name: str) -> int:
            return int("".join(str(ord(c) - ord("A")) for c in name[len("IMGIMG"):-1]))

        pairs = sorted((code_of(n), i) for n, i in vocabulary_map.items() if n.startswith("IMGIMG"))
        pairs = [(c, i) for c, i in pairs if num_codes is None or c < num_codes]
        if not pairs:
            raise BackboneError("config.json vocabulary_map has no IMGIMG...Z image tokens: not a Chameleon checkpoint")
        return cls(torch.tensor([c for c, _ in pairs]), torch.tensor([i for _, i in pairs]), vocab_size)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (any shape) -> vocabulary ids."""
        return self.code_to_id.to(codes.device)[codes]

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids (any shape) -> VQ codes; raises if any id is not an image token."""
        codes = self.id_to_code.to(ids.device)[ids]
        if (codes < 0).any():
            raise ValueError("ids_to_codes got ids that are not image tokens")
        return codes


class TokenFacts:
    """The ids of a Chameleon / Anole checkpoint, read from its config (`path` names it in errors)."""

    def __init__(self, config, path: Path):
        self.config, self.path = config, path

    @property
    def vocabulary_map(self) -> dict[str, int]:
        """Token name -> id, the reserved tokens a concept lives on included."""
        return self.config.vocabulary_map

    @property
    def logits_width(self) -> int:
        """Columns of `PersonalizedChameleon.logits`: the vocabulary (image tokens are in it)."""
        return int(self.config.vocab_size)

    @cached_property
    def image_map(self) -> ImageTokenMap:
        return ImageTokenMap.from_vocabulary_map(self.config.vocabulary_map, self.config.vocab_size,
                                                 int(self.config.vq_config.num_embeddings))

    def token_id(self, name: str) -> int:
        """Id of a named token, from the checkpoint's vocabulary_map (never hard-coded)."""
        try:
            return int(self.config.vocabulary_map[name])
        except KeyError:
            raise BackboneError(f"token {name!r} is not in {self.path}/config.json vocabulary_map") from None

    @cached_property
    def boi_id(self) -> int:
        return self.token_id("<racm3:break>")

    @cached_property
    def eoi_id(self) -> int:
        return self.token_id("<eoss>")

    @cached_property
    def end_of_turn_id(self) -> int:
        return self.token_id("<reserved08706>")

    @cached_property
    def bos_id(self) -> int:
        return self.token_id("<s>")

    @cached_property
    def reserved_ids(self) -> list[int]:
        """Ids of every <reservedNNNNN> token."""
        return [int(i) for name, i in self.config.vocabulary_map.items() if name.startswith("<reserved")]

    def text_banned_ids(self, allow=()) -> torch.Tensor:
        """(vocab,) bool: ids a text answer may never contain.

        Every image token, begin-of-image, and every reserved token except end-of-turn and the
        ids in `allow` (a loaded concept's identifier may appear in an answer; other reserved
        ids are untrained and could collide with concept tokens).
        """
        banned = self.image_map.is_image_token.clone()
        banned[self.boi_id] = True
        banned[self.reserved_ids] = True
        banned[self.end_of_turn_id] = False
        banned[list(allow)] = False
        return banned

    def text_stop_ids(self) -> list[int]:
        """Ids that end a text answer: end of turn and </s>."""
        return [self.end_of_turn_id, self.token_id("</s>")]
