"""Decoding shared by training, inference and evaluation: left padding, the self-prompt group
before an answer, and a free-text answer with the ids it may not contain.

`builder` is any object with the `SampleBuilder` interface (`backbone`, `concepts`,
`prompt_ids`, `text_ids`, `answer_prefix`); `model` is a `PersonalizedChameleon`.
"""

from __future__ import annotations

import torch

from yochameleon.model.personalized import decode_text


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts so their last tokens line up (for scoring and generation)."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = torch.tensor(prompt)
        mask[row, longest - len(prompt):] = 1
    return ids, mask


def answer_prompts(model, builder, prompts: list[list[int]], task: str, self_prompt: str = "forced"):
    """Prompts continued up to where the answer text starts.

    Under self-prompting the answer begins with the task's token group: `forced` appends it,
    `emitted` lets the model produce that many tokens itself (greedy), as a user's model would.
    """
    group = builder.answer_prefix(task)
    if not group:
        return prompts
    if self_prompt == "forced":
        return [p + group for p in prompts]
    if self_prompt != "emitted":
        raise ValueError(f"self_prompt must be 'forced' or 'emitted', got {self_prompt!r}")
    backbone = builder.backbone
    ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
    emitted = model.generate_text(ids.to(backbone.device), mask.to(backbone.device), len(group),
                                  backbone.image_map.is_image_token, stop_ids=[])
    return [p + e for p, e in zip(prompts, emitted)]


def generate_answer(model, builder, question: str, image=None, self_prompt: str = "forced",
                    max_new_tokens: int = 64, temperature: float = 0.0, generator=None) -> str:
    """Text answer after the task's self-prompt group (forced or emitted); identifiers shown as `<name>`."""
    backbone = builder.backbone
    prompt = answer_prompts(model, builder, [builder.prompt_ids(question, image)], "text_qa", self_prompt)[0]
    ids, mask = left_pad([prompt], backbone.tokenizer.pad_token_id)
    out = model.generate_text(ids.to(backbone.device), mask.to(backbone.device), max_new_tokens,
                              answer_banned_ids(builder, question), backbone.text_stop_ids(),
                              temperature=temperature, generator=generator)
    return decode_text(backbone, builder.concepts, out[0])


def answer_banned_ids(builder, question: str) -> torch.Tensor:
    """(vocab,) bool: ids a text answer to `question` may not contain.

    Image tokens and reserved ids, and a loaded concept's identifier unless the question names it:
    the identifier's output row is trained on answers that name the concept, and on questions that
    do not it outranked every word (the tiny model: 278 of 566 positions).
    """
    named = set(builder.text_ids(question))
    return builder.backbone.text_banned_ids(
        allow=[int(c.token_ids[0]) for c in builder.concepts if int(c.token_ids[0]) in named])
