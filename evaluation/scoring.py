"""Scoring rules: Yes/No and option letters from logits, and free answers parsed with word boundaries."""

from __future__ import annotations

import re
import time

import torch

from yochameleon.data.samples import left_pad
from yochameleon.metrics.recognition import answer_prompts

_YES = re.compile(r"\byes\b", re.I)
_NO = re.compile(r"\bno\b", re.I)
_NEGATION = re.compile(r"\b(not|cannot|can't|isn't|doesn't|don't|nowhere)\b", re.I)


def parse_yes_no(text: str) -> str | None:
    """'yes', 'no' or None for a free answer.

    Whole words only: "I know <sks>" is not a "no" (the official Yo'LLaVA script counts an answer
    as No when it merely contains the letters "no"). The earlier of the words wins; without
    either, a negation ("not", "cannot", ...) means no; anything else is unparsable (counted wrong).
    """
    yes, no = _YES.search(text), _NO.search(text)
    if yes and (not no or yes.start() < no.start()):
        return "yes"
    if no:
        return "no"
    return "no" if _NEGATION.search(text) else None


def first_token_ids(tokenizer, words: list[str]) -> list[int]:
    """The first token of each word; they must differ, or the words cannot be told apart by logits."""
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the tokenizer starts {words} with the same token; they cannot be scored by logits")
    return ids


@torch.no_grad()
def choose_options(model, builder, questions, task: str, self_prompt: str = "forced", batch_size: int = 8,
                   text_of=None) -> list[str]:
    """The option letter with the highest logit for each question (after the task's self-prompt group)."""
    backbone = builder.backbone
    picks: list[str] = []
    text_of = text_of or (lambda q: q.prompt_text())
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        prompts = [builder.prompt_ids(text_of(q), q.image) for q in chunk]
        prompts = answer_prompts(model, builder, prompts, task, self_prompt)
        ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
        logits = model.last_logits(ids.to(backbone.device), mask.to(backbone.device)).float()
        for row, question in enumerate(chunk):
            letters = list(question.options)
            columns = first_token_ids(backbone.tokenizer, letters)
            picks.append(letters[int(logits[row, columns].argmax())])
    return picks


def accuracy(picks: list[str], questions) -> float:
    """Fraction of questions answered with the correct letter (nan for none)."""
    if not questions:
        return float("nan")
    return sum(p == q.answer for p, q in zip(picks, questions)) / len(questions)


@torch.no_grad()
def free_answers(model, builder, images, question: str, self_prompt: str = "forced", max_new_tokens: int = 12,
                 batch_size: int = 8) -> list[str]:
    """Greedy answers to `question` about each image (identifiers shown as `<name>`)."""
    from yochameleon.model.personalized import decode_text

    backbone = builder.backbone
    banned = backbone.text_banned_ids(allow=[int(c.token_ids[0]) for c in builder.concepts if len(c.token_ids)])
    texts = []
    for start in range(0, len(images), batch_size):
        prompts = [builder.prompt_ids(question, image) for image in images[start:start + batch_size]]
        prompts = answer_prompts(model, builder, prompts, "recognition", self_prompt)
        ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
        out = model.generate_text(ids.to(backbone.device), mask.to(backbone.device), max_new_tokens, banned,
                                  backbone.text_stop_ids())
        learned = [c for c in builder.concepts if len(c.token_ids)]  # baselines introduce subjects by text
        texts += [decode_text(backbone, learned, o) for o in out]
    return texts


def timed(fn, *args, **kwargs):
    """(result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
