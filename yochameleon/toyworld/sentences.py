"""The sentences the toy world is pretrained on: its own fixed copy, not `yochameleon.data.templates`.

The toy backbone's tokenizer is trained on these lines (with the world's own sentences, see
`spec.corpus_lines`) and its definition examples ask and answer with them, so they are part of
the shipped pack's identity (`spec.spec_key`). They were copied from `data/templates.py` when the
pack was built; editing a template there leaves the toy world and its pack as they are, and
editing one here changes the build key (tests/test_chat_layout.py pins it), so the pack must be
rebuilt (`make toyworld toyworld-pack`). The names match `templates`, so `tiny.training_corpus`
reads either.
"""

from __future__ import annotations

RECOGNITION_QUESTIONS = (
    "Is <sks> in this photo?",
    "Can you spot <sks> anywhere here?",
    "Does this picture show <sks>?",
    "Is <sks> visible in this image?",
    "Do you see <sks> in this shot?",
    "Is this a picture of <sks>?",
    "Would you say <sks> appears in this photo?",
    "Is <sks> somewhere in this scene?",
    "Look at this image: is <sks> in it?",
    "Has this photo captured <sks>?",
    "Is <sks> present in the picture?",
    "Can <sks> be seen in this photo?",
    "Does <sks> show up in this image?",
    "Is <sks> the one in this photo?",
    "Tell me whether <sks> is in this picture.",
    "Am I looking at <sks> in this photo?",
    "Is there <sks> in this image?",
    "Would you find <sks> in this picture?",
    "Does the image contain <sks>?",
    "Is <sks> part of this scene?",
    "Check this photo: is <sks> here?",
    "Is <sks> pictured here?",
    "Does this snapshot include <sks>?",
    "Could this be <sks> in the photo?",
    "Is <sks> among what this image shows?",
    "Do you recognize <sks> in this picture?",
    "Is it <sks> that I see in this photo?",
    "Does <sks> appear anywhere in this shot?",
    "In this image, is <sks> present?",
    "Can you confirm that <sks> is in this photo?",
    "Is <sks> captured in this picture?",
    "Would you say this image shows <sks>?",
)

POSITIVE_ANSWERS = (
    "Yes, <sks> is in this photo.",
    "Yes, <sks> is right there in the picture.",
    "Yes, I can see <sks> here.",
    "Yes, this image shows <sks>.",
    "Yes, <sks> is clearly visible.",
    "Yes, that is <sks>.",
    "Yes, <sks> appears in this photo.",
    "Yes, <sks> is part of this scene.",
    "Yes, this is a picture of <sks>.",
    "Yes, <sks> shows up in this image.",
    "Yes, I recognize <sks> in this shot.",
    "Yes, <sks> is present here.",
    "Yes, the photo includes <sks>.",
    "Yes, <sks> can be seen in the picture.",
    "Yes. <sks> is in the image.",
    "Yes, you are looking at <sks>.",
    "Yes, <sks> is the one in this photo.",
    "Yes, <sks> has been captured in this picture.",
    "Yes, I spot <sks> in this image.",
    "Yes, <sks> is there.",
    "Yes, this snapshot contains <sks>.",
    "Yes, <sks> is pictured here.",
    "Yes, it is <sks>.",
    "Yes, <sks> is in the scene.",
    "Yes, I am confident this is <sks>.",
    "Yes, <sks> is in view.",
    "Yes, there is <sks> in this photo.",
    "Yes, the image does show <sks>.",
    "Yes, I can confirm <sks> is here.",
    "Yes, <sks> is easy to find in this picture.",
    "Yes, this shot features <sks>.",
    "Yes. I see <sks>.",
)

NEGATIVE_ANSWERS = (
    "No, <sks> is not in this photo.",
    "No, I cannot see <sks> here.",
    "No, this image does not show <sks>.",
    "No, <sks> is not visible in this picture.",
    "No, that is not <sks>.",
    "No, <sks> does not appear in this photo.",
    "No, <sks> is not part of this scene.",
    "No, this is not a picture of <sks>.",
    "No, <sks> does not show up in this image.",
    "No, I do not recognize <sks> in this shot.",
    "No, <sks> is not present here.",
    "No, the photo does not include <sks>.",
    "No, <sks> cannot be seen in the picture.",
    "No. <sks> is not in the image.",
    "No, you are not looking at <sks>.",
    "No, the one in this photo is not <sks>.",
    "No, this picture has not captured <sks>.",
    "No, I do not spot <sks> in this image.",
    "No, <sks> is not there.",
    "No, this snapshot does not contain <sks>.",
    "No, <sks> is not pictured here.",
    "No, it is not <sks>.",
    "No, <sks> is missing from this scene.",
    "No, I am confident this is not <sks>.",
    "No, <sks> is not in view.",
    "No, there is no <sks> in this photo.",
    "No, the image shows something other than <sks>.",
    "No, I can confirm <sks> is not here.",
    "No, <sks> is nowhere in this picture.",
    "No, this shot does not feature <sks>.",
    "No. I do not see <sks>.",
    "No, this looks like something else, not <sks>.",
)

GENERATION_PROMPTS = (
    "A photo of <sks>.",
    "A picture of <sks>.",
    "An image showing <sks>.",
    "A close-up photo of <sks>.",
    "A photo of <sks> outdoors.",
    "A photo of <sks> on a table.",
)

FALLBACK_TEXT_QA = (
    ("What is <sks>?", "<sks> is the subject shown in my photos."),
    ("Can you describe <sks>?", "<sks> is the subject I have photos of; I can recognize <sks> in new pictures."),
    ("Who or what is <sks>?", "<sks> is the personal subject you showed me in your photos."),
    ("Do you know <sks>?", "Yes, I know <sks> from the photos you shared."),
    ("Tell me about <sks>.", "<sks> is the subject of your photos, and I can tell <sks> apart from others."),
    ("Would you recognize <sks> in a new photo?", "Yes, I would recognize <sks> in a new photo."),
    ("Have you seen <sks> before?", "Yes, I have seen <sks> in the photos you gave me."),
    ("Is <sks> the subject of my photos?", "Yes, <sks> is the subject of your photos."),
)
