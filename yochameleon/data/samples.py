"""Training samples for the three task families, and the deterministic order they are seen in.

Chat layout (all ids, written by `yochameleon.data.chat`; loss only on the answer):

    <s> <sks> is <g..><u..>.\\n [<racm3:break> image <eoss>] question <eot> | [group] answer <eot>

`[group]` is the self-prompt: `<u-tokens>` before a text answer and `<g-tokens>`
before an image, present at training *and* inference when self-prompting is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from yochameleon.data import templates
from yochameleon.data.chat import ChatLayout, chat_layout
from yochameleon.errors import YoChameleonError
from yochameleon.model.personalized import IGNORE_INDEX

TASKS = ("recognition", "vqa", "text_qa", "generation")
# How the self-prompt group before a *text* answer counts in that sample's loss (images always count
# every token): "token", each group token as much as an answer token (upstream's plain LM loss);
# "group", the whole group as much as one answer token. Measured on the toy world (README): with
# 16 u-tokens in every answer, "token" spends most of a recognition sample's loss on reciting the
# group, and the rows learn to recite it before they learn to tell the concept apart.
GROUP_LOSS = ("token", "group")
# The self-prompt group before an image (`recipe.generation_group`): "full", every g-token (Yo'Chameleon's
# layout, the paper's forced group); "none", begin-of-image right after the end of turn (the g-tokens then
# act only through the soft prompt); an integer n, the first n g-tokens. docs/training.md says which
# the toy world's validation split chose and why.


def generation_group_size(setting, k_g: int) -> int:
    """How many g-tokens `recipe.generation_group` puts before an image (of `k_g`)."""
    if setting in (None, "full"):
        return k_g
    if setting == "none":
        return 0
    try:
        count = int(setting)
    except (TypeError, ValueError):
        raise ValueError(f"recipe.generation_group must be full, none or a number of g-tokens, got {setting!r}") from None
    if not 0 <= count <= k_g:
        raise ValueError(f"recipe.generation_group={count} must be between 0 and recipe.k_g ({k_g})")
    return count


@dataclass(frozen=True)
class SampleSpec:
    """What one sample is, before tokenization: cheap to plan, store and shuffle."""

    task: str
    image: str | None = None  # path of the photo shown (recognition, vqa) or drawn (generation)
    flip: bool = False
    question: str = ""
    answer: str = ""  # text answer; empty for generation
    positive: bool = True
    n_tokens: int | None = None  # soft positive: described by only the first n generation tokens


def check_self_prompt_settings(recipe) -> None:
    """Refuse settings that only act under self-prompting when it is off, rather than ignore them: the default
    recipe self-prompts nowhere (since 2026-12-06), so `recipe.generation_group=full` alone would change nothing."""
    if bool(recipe["self_prompting"]):
        return
    group = str(recipe.get("generation_group", "none"))
    if group not in ("none", "0"):
        raise YoChameleonError(
            f"recipe.generation_group={group} puts g-tokens before an image only under self-prompting, which this "
            "recipe has off (recipe.self_prompting=false, the default): add recipe.self_prompting=true, or use "
            "recipe=paper-layout (the paper's whole layout)")
    mode = str(recipe.get("inference", {}).get("self_prompt", "forced"))
    if mode != "forced":
        raise YoChameleonError(
            f"recipe.inference.self_prompt={mode} chooses how the self-prompt group is produced, and this recipe has "
            "none (recipe.self_prompting=false, the default): add recipe.self_prompting=true or leave it forced")


class SampleBuilder:
    """Turns `SampleSpec`s into token ids and labels for one concept on one backbone."""

    def __init__(self, backbone, tokens, code_cache, self_prompting: bool, others: tuple = (), *,
                 group_loss: str | None = None, generation_group=None, generation_weight: float = 1.0):
        # `tokens` is the concept `<sks>` refers to; `others` are further loaded concepts,
        # each named by its own `<name>` in text and introduced in the system prefix too.
        # `group_loss`: how much the self-prompt group weighs in a text answer's loss (`GROUP_LOSS`),
        # from recipe.self_prompt_loss (`from_recipe`); None: a builder of prompts only (inference,
        # evaluation), whose `build` of a training sample is refused rather than given a default.
        if group_loss is not None and group_loss not in GROUP_LOSS:
            raise ValueError(f"recipe.self_prompt_loss must be one of {', '.join(GROUP_LOSS)}, got {group_loss!r}")
        # `tokens` None: a prompt about no concept (inference on a prompt that names none): no
        # introduction, no self-prompt group, the plain backbone's prompt.
        self.backbone, self.tokens, self.cache = backbone, tokens, code_cache
        self.concepts = [*([tokens] if tokens is not None else []), *others]
        self.self_prompting = self_prompting
        self.group_loss = group_loss
        k_g = len(tokens.g_token_ids()) if hasattr(tokens, "g_token_ids") else 0  # a baseline's subject has none
        # None: the group the concept's rows were trained with (`PersonalizedTokens.generation_group`).
        if generation_group is None:
            generation_group = getattr(tokens, "generation_group", "full")
        self.generation_group = generation_group_size(generation_group, k_g)
        self.generation_weight = float(generation_weight)  # a generation sample's loss, relative to the others'
        self._text_cache: dict[str, list[int]] = {}

    @classmethod
    def from_recipe(cls, backbone, tokens, code_cache, recipe, others: tuple = ()) -> SampleBuilder:
        """The builder a recipe config (`cfg.recipe`, or an adapter's recorded recipe) describes."""
        # Adapters written before these settings existed were trained with the full group and weight 1.
        return cls(backbone, tokens, code_cache, bool(recipe["self_prompting"]), others,
                   group_loss=str(recipe["self_prompt_loss"]),
                   generation_group=recipe.get("generation_group", "full"),
                   generation_weight=float(recipe.get("generation_weight", 1.0)))

    @cached_property
    def layout(self) -> ChatLayout:
        """The backbone's chat layout, which every id list here is assembled in."""
        return chat_layout(self.backbone)

    def text_ids(self, text: str) -> list[int]:
        """Tokenize text; `<sks>` and each concept's `<name>` become its identifier token."""
        if self.tokens is not None:
            text = text.replace("<sks>", self.tokens.identifier)
        for concept in self.concepts:
            text = text.replace(f"<{concept.name}>", concept.identifier)
        if text not in self._text_cache:
            self._text_cache[text] = self.backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._text_cache[text]

    def image_ids(self, image, flip: bool = False) -> list[int]:
        """An image as a generation target: begin-of-image, its VQ image tokens, end-of-image.

        A path is read from the code cache, a PIL image encoded now.
        """
        return self.layout.image(self.backbone.image_codes(image, flip, self.cache))

    def shown_image_ids(self, image, flip: bool = False) -> list[int]:
        """An image shown in a prompt (recognition, VQA): Chameleon's VQ tokens; Janus's vision-encoder slots."""
        return self.layout.image(self.backbone.shown_image_codes(image, flip, self.cache))

    def prefix_ids(self) -> list[int]:
        """What introduces the concepts (`introduction_ids`: the one function every caller uses)."""
        return introduction_ids(self, self.concepts)

    def prompt_ids(self, question: str, image=None, flip: bool = False) -> list[int]:
        """The prompt up to and including the end-of-turn token."""
        prefix = self.prefix_ids()
        shown = self.shown_image_ids(image, flip) if image is not None else ()
        return self.layout.prompt(self.text_ids(self.layout.question_text(question, bool(shown))), prefix, shown)

    def introduction_tokens(self) -> int:
        """Tokens spent introducing the subjects: the prompt minus the same prompt without them."""
        return len(self.prompt_ids("")) - len(self.layout.prompt(self.text_ids(self.layout.question_text("", False))))

    def image_prompt_ids(self, text: str) -> list[int]:
        """A generation prompt: the chat prompt, the `<g-tokens>` group under self-prompting, begin-of-image."""
        return self.layout.image_prompt(self.text_ids(self.layout.question_text(text, False)), self.prefix_ids(),
                                        self.answer_prefix("generation"))

    def unconditional_image_prompt_ids(self, prompt: list[int] | None = None) -> list[int]:
        """The classifier-free-guidance prompt for the generation prompt `prompt`, in the family's own way:
        Chameleon, an empty turn (no system prefix, no concept); Janus, `prompt` with every id but
        begin-of-sentence and begin-of-image replaced by padding."""
        return self.layout.unconditional_image_prompt(prompt)

    def answer_prefix(self, task: str, n_tokens: int | None = None) -> list[int]:
        """The self-prompt group a task's answer starts with (empty when self-prompting is off)."""
        if not self.self_prompting or self.tokens is None:
            return []
        if task == "generation":  # recipe.generation_group: all, the first n, or none of the (described) g-tokens
            return self.tokens.g_token_ids(n_tokens)[:self.generation_group]
        return self.tokens.u_token_ids()

    def build(self, spec: SampleSpec) -> dict:
        """input_ids and labels (prompt masked with -100) for one sample."""
        if self.group_loss is None:
            raise ValueError("this SampleBuilder builds prompts only: give group_loss (recipe.self_prompt_loss), "
                             "e.g. SampleBuilder.from_recipe(..., cfg.recipe), to build training samples")
        if spec.task == "generation":
            question = spec.question
            if spec.n_tokens is not None:  # a soft positive: a look-alike, named by part of the g-tokens only
                question = question.replace("<sks>", self.tokens.g_tokens_string(spec.n_tokens))
            prompt = self.prompt_ids(question)
            group = self.answer_prefix("generation", spec.n_tokens)
            answer = self.layout.answer(self.image_ids(spec.image, spec.flip), group)
            group_weight = 1.0  # an image answer counts every token
            sample_weight = self.generation_weight
        else:
            shown = spec.image if spec.task in ("recognition", "vqa") else None
            prompt = self.prompt_ids(spec.question, shown, spec.flip)
            group = self.answer_prefix(spec.task)
            answer = self.layout.answer(self.text_ids(self.layout.answer_text(spec.answer)), group)
            group_weight = 1.0 / len(group) if group and self.group_loss == "group" else 1.0
            sample_weight = 1.0
        weights = [group_weight] * len(group) + [1.0] * (len(answer) - len(group))  # the end of turn counts 1
        return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer,
                "weights": [0.0] * len(prompt) + weights, "task": spec.task, "sample_weight": sample_weight}


def introduction_ids(builder, subjects) -> list[int]:
    """The ids that introduce `subjects` before a question: the one function that builds them for training,
    inference, evaluation and the prompting baselines, so an adapter is always scored on the ids it trained on.

    Each subject gives its text (`system_prefix()`: a concept's soft prompt "<sks> is <g..><u..>.", a
    baseline's description), its reference photos if it has any (`photos`, shown as `builder.shown_image_ids`
    gives them) and a newline; a subject with neither text nor photos gives nothing. Consecutive text is
    tokenized as *one* text (a BPE tokenizer may merge ".\n" into one token: it does so everywhere alike);
    only a photo splits it.
    """
    parts: list = []
    for subject in subjects:
        text, photos = subject.system_prefix(), tuple(getattr(subject, "photos", ()))
        if not text and not photos:
            continue
        parts += [text, *(builder.shown_image_ids(photo) for photo in photos), "\n"]
    ids: list[int] = []
    run = ""
    for part in parts:
        if isinstance(part, str):
            run += part
            continue
        if run:
            ids += builder.text_ids(run)
            run = ""
        ids += part
    return ids + (builder.text_ids(run) if run else [])


class EpochPlan:
    """The samples of every epoch, fixed by (seed, epoch): resuming at step s replays exactly."""

    def __init__(self, concept, tasks: dict, seed: int, *, negatives_per_photo: int, preparation,
                 soft_positives_per_epoch: int, balance_recognition: bool, flip_generation: bool = False,
                 generation_repeats: int = 1):
        # Without a preparation, negatives are drawn at random from the whole pool each epoch;
        # with one, every hard negative is used each epoch plus a random draw of easy ones.
        # balance_recognition: the photos are shown (re-flipped, with fresh questions) as often as
        # negatives are, so "Yes" and "No" are equally likely targets. No defaults here: see `from_recipe`.
        self.concept, self.tasks, self.seed = concept, tasks, seed
        self.balance_recognition = balance_recognition
        self.negatives_per_photo = negatives_per_photo
        self.hard = list(preparation.hard_negatives) if preparation else []
        self.easy = list(preparation.easy_negatives) if preparation else [str(p) for p in concept.negatives]
        self.soft = list(preparation.soft_positives) if preparation else []
        self.generated_qa = list(preparation.conversations) if preparation else []
        self.soft_per_epoch = soft_positives_per_epoch
        # Generation targets mirrored at random (recipe.flip_generation) and each photo drawn
        # `generation_repeats` times an epoch; the recipe config says how the defaults were chosen.
        self.flip_generation, self.generation_repeats = flip_generation, generation_repeats
        self.size = len(self.epoch(0))

    @classmethod
    def from_recipe(cls, concept, recipe, seed: int, preparation) -> EpochPlan:
        """The plan `cfg.recipe` describes: its tasks, negatives per photo, soft positives and balance."""
        soft = recipe.soft_positives
        return cls(concept, {k: bool(v) for k, v in recipe.tasks.items()}, int(seed),
                   negatives_per_photo=int(recipe.negatives_per_photo), preparation=preparation,
                   soft_positives_per_epoch=int(soft.per_epoch) if soft.enabled else 0,
                   balance_recognition=bool(recipe.balance_recognition),
                   flip_generation=bool(recipe.get("flip_generation", False)),
                   generation_repeats=int(recipe.get("generation_repeats", 1)))

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def epoch(self, epoch: int) -> list[SampleSpec]:
        """The shuffled sample list of one epoch."""
        g = self._generator(epoch)

        def pick(options):
            return options[int(torch.randint(len(options), (1,), generator=g))]

        def flip():
            return bool(torch.randint(2, (1,), generator=g))

        def generation_flip():  # the stream moves as with flips, so the other samples stay the same either way
            return flip() and self.flip_generation

        photos = [str(p) for p in self.concept.photos]
        specs: list[SampleSpec] = []
        if self.tasks["recognition"]:
            count = min(len(self.easy), self.negatives_per_photo * len(photos))
            easy = [self.easy[i] for i in torch.randperm(len(self.easy), generator=g)[:count].tolist()]
            shown = len(photos)
            if self.balance_recognition and photos:
                shown = max(shown, len(self.hard) + len(easy))
            for index in range(shown):
                specs.append(SampleSpec("recognition", photos[index % len(photos)], flip(),
                                        pick(templates.RECOGNITION_QUESTIONS), pick(templates.POSITIVE_ANSWERS), True))
            for negative in self.hard + easy:
                specs.append(SampleSpec("recognition", str(negative), flip(),
                                        pick(templates.RECOGNITION_QUESTIONS), pick(templates.NEGATIVE_ANSWERS),
                                        False))
        conversations = self.concept.conversations
        if self.tasks["vqa"]:
            for turn in (c for c in conversations if c["image"] is not None):
                specs.append(SampleSpec("vqa", turn["image"], False, turn["question"], turn["answer"]))
        if self.tasks["text_qa"]:
            user_turns = [c for c in conversations if c["image"] is None]
            turns = user_turns or self.generated_qa
            pairs = [(c["question"], c["answer"]) for c in turns] or list(templates.FALLBACK_TEXT_QA)
            order = torch.randperm(len(pairs), generator=g).tolist()
            # Without the user's own conversations, cap the generated or generic questions per epoch
            # so they do not swamp the photos.
            keep = order if user_turns else order[: max(2, len(photos))]
            for index in keep:
                specs.append(SampleSpec("text_qa", None, False, *pairs[index]))
        if self.tasks["generation"]:
            for _ in range(self.generation_repeats):
                for photo in photos:
                    specs.append(SampleSpec("generation", photo, generation_flip(), templates.GENERATION_PROMPTS[0]))
            count = min(len(self.soft), self.soft_per_epoch)
            for index in torch.randperm(len(self.soft), generator=g)[:count].tolist():
                path, n_tokens = self.soft[index]
                specs.append(SampleSpec("generation", str(path), generation_flip(), templates.GENERATION_PROMPTS[0],
                                        n_tokens=int(n_tokens)))
        if not specs:
            raise ValueError("every task is switched off in recipe.tasks; enable at least one")
        return [specs[i] for i in torch.randperm(len(specs), generator=g).tolist()]

    def batch(self, step: int, batch_size: int) -> list[SampleSpec]:
        """The samples of global step `step` (0-based); epochs are consecutive, the last batch may be short."""
        per_epoch = math.ceil(self.size / batch_size)
        epoch, index = divmod(step, per_epoch)
        return self.epoch(epoch)[index * batch_size:(index + 1) * batch_size]

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(self.size / batch_size)


def collate(samples: list[dict], pad_id: int) -> dict:
    """Right-pad a batch to its longest sample (dynamic padding, never a fixed length).

    `weights` (each label's weight in its sample's loss) is there when every sample has them.
    """
    if not samples:
        raise ValueError("collate() needs at least one sample: a process left without samples by a short last "
                         "batch must still run one (the training loop gives it zero loss weight, see rank_share)")
    longest = max(len(s["input_ids"]) for s in samples)
    weights = (torch.zeros((len(samples), longest), dtype=torch.float32)
               if all("weights" in s for s in samples) else None)
    input_ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(samples), longest), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        input_ids[row, :n] = torch.tensor(sample["input_ids"])
        labels[row, :n] = torch.tensor(sample["labels"])
        attention[row, :n] = 1
        if weights is not None:
            weights[row, :n] = torch.tensor(sample["weights"])
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "weights": weights,
            "tasks": [s["task"] for s in samples],
            "sample_weights": torch.tensor([float(s.get("sample_weight", 1.0)) for s in samples])}
