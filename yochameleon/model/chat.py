"""The chat layout: where `<s>`, the subject prefix, an image, the question, end of turn and the answer go.

A fact of each backbone family (`Backbone.layout`), so it lives beside the families in `model/`;
`data/` builds samples on top of it (`yochameleon.data.chat` re-exports these names).

Chameleon-family backbones (Chameleon, Anole, the tiny and toy models) all read one layout,
in token ids:

    <s> prefix [<racm3:break> image codes <eoss>] question <eot> | [group] answer <eot>

The prompt ends at the first `<eot>` (end of turn, `<reserved08706>`). `prefix` introduces the
subjects: a concept's soft prompt "<sks> is <g..><u..>.\\n", a baseline's description, or
nothing. `[group]` is the self-prompt (a concept's `<u-tokens>` before a text answer, its
`<g-tokens>` before an image); an image answer is `<racm3:break> codes <eoss>`, and an
image-generation prompt stops right after that `<racm3:break>`.

Every caller builds its ids with it: training samples (`SampleBuilder`), evaluation baselines,
conversation generation in preparation, and the toy world's pretraining and knowledge report.
The toy backbone can be personalized *because* it was pretrained on this same layout (a
definition "<name> is an orange striped heart.\\n" is the soft prompt with words in place of
the learned tokens); tests/test_chat_layout.py holds that as a test.

Janus-Pro reads its own layout (`JanusLayout`, the roles and markers of its chat template):

    <bos> prefix <|User|>: [<begin_of_image> image <end_of_image>\n] question \n\n<|Assistant|>: | [group] answer <eos>

Its image in a prompt is vision-encoder features (ids the backbone maps to them, model/janus.py),
its image answer the generation tokenizer's codes; both sit between its image markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChatLayout:
    """What every family's layout shares: text ids, and an image between its two markers."""

    tokenizer: object
    bos: int  # begin of sequence
    boi: int  # begin of image
    eoi: int  # end of image
    end_of_turn: int  # ends an answer

    def text(self, text: str) -> list[int]:
        """Text ids, without the tokenizer's own special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def image(self, codes: Sequence[int]) -> list[int]:
        """An image in a sequence: begin-of-image, its image-token ids, end-of-image."""
        return [self.boi, *codes, self.eoi]

    def question_text(self, question: str, shown: bool) -> str:
        """The question as it is tokenized after the user's role (`shown`: an image comes before it)."""
        return question

    def answer_text(self, answer: str) -> str:
        """An answer (or an option scored as one) as it is tokenized after the assistant's role."""
        return answer

    def answer(self, answer: Sequence[int], group: Sequence[int] = ()) -> list[int]:
        """The continuation a prompt is trained on: self-prompt group, answer ids, end of turn."""
        return [*group, *answer, self.end_of_turn]

    def image_prompt(self, question: Sequence[int], prefix: Sequence[int] = (),
                     group: Sequence[int] = ()) -> list[int]:
        """An image-generation prompt: the prompt, the self-prompt group, begin-of-image."""
        return [*self.prompt(question, prefix), *group, self.boi]


@dataclass(frozen=True)
class ChameleonLayout(ChatLayout):
    """The Chameleon chat layout: <s>, <racm3:break> / <eoss> around images, <reserved08706> ends a turn."""

    def prompt(self, question: Sequence[int], prefix: Sequence[int] = (), image: Sequence[int] = ()) -> list[int]:
        """A user turn up to and including end of turn: `<s>`, prefix, image (as `image()` gives it), question."""
        return [self.bos, *prefix, *image, *question, self.end_of_turn]

    def unconditional_image_prompt(self, prompt: Sequence[int] | None = None) -> list[int]:
        """The classifier-free-guidance prompt: an empty turn, no prefix, no group, then begin-of-image."""
        return self.image_prompt(self.text(""))


@dataclass(frozen=True)
class JanusLayout(ChatLayout):
    """Janus-Pro's chat template: `<|User|>: ...\n\n<|Assistant|>:`, <begin_of_image> / <end_of_image>,
    the end of sentence ends an answer. `pad` fills the unconditional prompt."""

    pad: int = 0

    def question_text(self, question: str, shown: bool) -> str:
        # The template's space after "<|User|>:" belongs to the first word (" A", one token), as the
        # processor tokenizes the whole turn; after an image the question follows a newline instead.
        return question if shown else f" {question}"

    def answer_text(self, answer: str) -> str:
        return f" {answer}"  # "<|Assistant|>: Yes": the space is the answer's first token's

    def prompt(self, question: Sequence[int], prefix: Sequence[int] = (), image: Sequence[int] = ()) -> list[int]:
        """A user turn up to the assistant's role: <bos>, prefix, `<|User|>:`, [` ` image, newline,] question
        (its ids from `question_text`), `\n\n<|Assistant|>:`."""
        shown = [*self.text(" "), *image, *self.text("\n")] if image else []
        return [self.bos, *prefix, *self.text("<|User|>:"), *shown, *question, *self.text("\n\n<|Assistant|>:")]

    def unconditional_image_prompt(self, prompt: Sequence[int] | None = None) -> list[int]:
        """Janus's own guidance prompt: `prompt` with every id but <bos> and begin-of-image made padding
        (as `JanusForConditionalGeneration.generate` builds it, same length, every position attended)."""
        if prompt is None:
            raise ValueError("a Janus unconditional prompt is made from its conditional prompt: pass it")
        return [t if t in (self.bos, self.boi) else self.pad for t in prompt]


def chat_layout(backbone) -> ChatLayout:
    """The chat layout of a loaded backbone (its family's: `Backbone.chat_layout`)."""
    return backbone.chat_layout()
