"""Option choice from logits: the option whose first token scores highest is the answer.

One rule for the harness's multiple-choice questions (the options are letters) and for a
concept's text checks (the options are the answer words, e.g. the toy world's colours),
scored after the task's self-prompt group.
"""

from __future__ import annotations

import torch

from yochameleon.model.decoding import answer_prompts, left_pad


def first_token_ids(tokenizer, words: list[str]) -> list[int]:
    """The first token of each word; they must differ, or the words cannot be told apart by logits."""
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the tokenizer starts {words} with the same token; they cannot be scored by logits")
    return ids


@torch.no_grad()
def choose_options(model, builder, questions, task: str, self_prompt: str = "forced", batch_size: int = 8,
                   text_of=None) -> list[str]:
    """The option with the highest first-token logit for each question (after the task's self-prompt group).

    A question has `options` (the strings scored: letters, or answer words) and may have an
    `image`; its prompt text is `text_of(question)`, by default `question.prompt_text()`.
    """
    backbone = builder.backbone
    picks: list[str] = []
    text_of = text_of or (lambda q: q.prompt_text())
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        prompts = [builder.prompt_ids(text_of(q), getattr(q, "image", None)) for q in chunk]
        prompts = answer_prompts(model, builder, prompts, task, self_prompt)
        ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
        logits = model.last_logits(ids.to(backbone.device), mask.to(backbone.device)).float()
        for row, question in enumerate(chunk):
            options = list(question.options)
            columns = first_token_ids(backbone.tokenizer, [builder.layout.answer_text(o) for o in options])
            picks.append(options[int(logits[row, columns].argmax())])
    return picks


def accuracy(picks: list[str], questions) -> float:
    """Fraction of questions answered with their `answer` (nan for none)."""
    if not questions:
        return float("nan")
    return sum(p == q.answer for p, q in zip(picks, questions)) / len(questions)


def score_text_checks(model, builder, checks, batch_size: int = 1) -> dict:
    """A concept's text checks (`TextCheck`s: no image) answered after the forced `<u-tokens>` group.

    `text_qa` / `text_qa_heldout`: the share right in the training / held-out wordings;
    `text_qa_<attribute>` / `text_qa_heldout_<attribute>`: the same per attribute asked about.
    A wording without checks has no figure. One question per forward by default (no padding).
    """
    picks = choose_options(model, builder, checks, "text_qa", "forced", batch_size, text_of=lambda c: c.question)
    right = [(check, pick == check.answer) for check, pick in zip(checks, picks)]
    out, per_attribute = {}, {}
    for wording, key in (("training", "text_qa"), ("heldout", "text_qa_heldout")):
        mine = [(check, ok) for check, ok in right if check.wording == wording]
        if mine:
            out[key] = sum(ok for _, ok in mine) / len(mine)
        groups: dict[str, list[bool]] = {}
        for check, ok in mine:
            if check.attribute:
                groups.setdefault(check.attribute, []).append(ok)
        per_attribute |= {f"{key}_{attribute}": sum(oks) / len(oks) for attribute, oks in groups.items()}
    return out | per_attribute
