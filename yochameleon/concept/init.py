"""Where a concept's rows start (`recipe.init`).

`reserved`: the backbone's own rows of the reserved ids (what `PersonalizedTokens.from_backbone` reads).
`description`: the backbone is asked to describe each training photo; the g-tokens' input rows start
as the embeddings of the words of its most frequent description, repeated to fill the group. The soft
prompt `<sks> is <g-tokens><u-tokens>.` then begins as a sentence the backbone itself would write about
the subject, so the generation tokens start where the words that draw it are, instead of at rows the
backbone never saw (docs/training.md, "Making the generation tokens learn", has the measurements).
Cheap on any backbone: one short greedy answer per photo.
"""

from __future__ import annotations

from collections import Counter

import torch

from yochameleon.model.decoding import left_pad
from yochameleon.model.personalized import decode_text

DESCRIBE_QUESTION = "Describe the image."


@torch.no_grad()
def describe_photos(model, builder, photos: list, max_new_tokens: int = 24) -> list[str]:
    """The backbone's greedy answer to DESCRIBE_QUESTION for each photo, asked with no concept in the prompt.

    `builder` is a prompts-only `SampleBuilder` with no concept (`tokens=None`): the plain backbone's prompt.
    """
    backbone = builder.backbone
    prompts = [builder.prompt_ids(DESCRIBE_QUESTION, photo) for photo in photos]
    ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
    out = model.generate_text(ids.to(backbone.device), mask.to(backbone.device), max_new_tokens,
                              backbone.text_banned_ids(), backbone.text_stop_ids())
    return [decode_text(backbone, [], o).strip() for o in out]


def chosen_description(descriptions: list[str]) -> str:
    """The most frequent description (the first of the tied ones), without its final full stop."""
    usable = [d for d in descriptions if d.strip(" .")]
    if not usable:
        raise ValueError("recipe.init=description: the backbone described none of the photos (every answer was "
                         "empty); use recipe.init=reserved")
    return Counter(usable).most_common(1)[0][0].rstrip(" .")


@torch.no_grad()
def init_from_description(tokens, backbone, description: str) -> list[int]:
    """Set the g-tokens' input rows (every latent token's when shared) to the embeddings of `description`'s
    token ids, cycled to fill the group; returns the ids used. Output rows are left as they are."""
    word_ids = backbone.tokenizer(description, add_special_tokens=False)["input_ids"]
    if not word_ids:
        raise ValueError(f"recipe.init=description: the description {description!r} has no tokens")
    positions = tokens.g_positions()
    if not positions:
        return []
    table = backbone.model.get_input_embeddings().weight
    chosen = [word_ids[i % len(word_ids)] for i in range(len(positions))]
    rows = table[torch.tensor(chosen, device=table.device)].float().to(tokens.input_rows.device)
    tokens.input_rows[torch.tensor(positions, device=tokens.input_rows.device)] = rows
    return chosen
