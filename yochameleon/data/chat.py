"""The chat layout: where `<s>`, the subject prefix, an image, the question, end of turn and the answer go.

Chameleon-family backbones (Chameleon, Anole, the tiny and toy models) all read one layout,
in token ids:

    <s> prefix [<racm3:break> image codes <eoss>] question <eot> | [group] answer <eot>

The prompt ends at the first `<eot>` (end of turn, `<reserved08706>`). `prefix` introduces the
subjects: a concept's soft prompt "<sks> is <g..><u..>.\\n", a baseline's description, or
nothing. `[group]` is the self-prompt (a concept's `<u-tokens>` before a text answer, its
`<g-tokens>` before an image); an image answer is `<racm3:break> codes <eoss>`, and an
image-generation prompt stops right after that `<racm3:break>`.

Every caller builds its ids here: training samples (`SampleBuilder`), evaluation baselines,
conversation generation in preparation, and the toy world's pretraining and knowledge report.
The toy backbone can be personalized *because* it was pretrained on this same layout (a
definition "<name> is an orange striped heart.\\n" is the soft prompt with words in place of
the learned tokens); tests/test_chat_layout.py holds that as a test. A backbone family with
another layout (Janus) gets its own class with these methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChameleonLayout:
    """The Chameleon chat layout over one tokenizer and its special ids."""

    tokenizer: object
    bos: int  # <s>
    boi: int  # <racm3:break>, begin of image
    eoi: int  # <eoss>, end of image
    end_of_turn: int  # <reserved08706>

    def text(self, text: str) -> list[int]:
        """Text ids, without the tokenizer's own special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def image(self, codes: Sequence[int]) -> list[int]:
        """An image in a sequence: begin-of-image, its image-token ids, end-of-image."""
        return [self.boi, *codes, self.eoi]

    def prompt(self, question: Sequence[int], prefix: Sequence[int] = (), image: Sequence[int] = ()) -> list[int]:
        """A user turn up to and including end of turn: `<s>`, prefix, image (as `image()` gives it), question."""
        return [self.bos, *prefix, *image, *question, self.end_of_turn]

    def answer(self, answer: Sequence[int], group: Sequence[int] = ()) -> list[int]:
        """The continuation a prompt is trained on: self-prompt group, answer ids, end of turn."""
        return [*group, *answer, self.end_of_turn]

    def image_prompt(self, question: Sequence[int], prefix: Sequence[int] = (),
                     group: Sequence[int] = ()) -> list[int]:
        """An image-generation prompt: the prompt, the self-prompt group, begin-of-image."""
        return [*self.prompt(question, prefix), *group, self.boi]

    def unconditional_image_prompt(self) -> list[int]:
        """The classifier-free-guidance prompt: an empty turn, no prefix, no group, then begin-of-image."""
        return self.image_prompt(self.text(""))


def chat_layout(backbone) -> ChameleonLayout:
    """The chat layout of a loaded backbone (every backbone today is of the Chameleon family)."""
    return ChameleonLayout(backbone.tokenizer, backbone.bos_id, backbone.boi_id, backbone.eoi_id,
                           backbone.end_of_turn_id)
