"""Templates: enough variety, the placeholder where it belongs, answers that score as Yes/No."""

from yochameleon.data import templates


def test_counts_and_uniqueness():
    for group in (templates.RECOGNITION_QUESTIONS, templates.POSITIVE_ANSWERS, templates.NEGATIVE_ANSWERS):
        assert len(group) >= 30 and len(set(group)) == len(group)


def test_placeholders_and_prefixes():
    assert all(q.count("<sks>") == 1 for q in templates.RECOGNITION_QUESTIONS)
    assert all(a.startswith(("Yes,", "Yes.", "Yes ")) for a in templates.POSITIVE_ANSWERS)
    assert all(a.startswith(("No,", "No.", "No ")) for a in templates.NEGATIVE_ANSWERS)
    assert templates.GENERATION_PROMPTS[0] == "A photo of <sks>."
    assert all("<sks>" in q for q, _ in templates.FALLBACK_TEXT_QA)


def test_yes_and_no_are_single_distinct_first_tokens(backbone):
    from yochameleon.metrics.recognition import yes_no_ids

    yes, no = yes_no_ids(backbone.tokenizer)
    tok = backbone.tokenizer
    assert tok(templates.POSITIVE_ANSWERS[0], add_special_tokens=False)["input_ids"][0] == yes
    assert tok(templates.NEGATIVE_ANSWERS[0], add_special_tokens=False)["input_ids"][0] == no
