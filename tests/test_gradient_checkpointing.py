"""trainer.gradient_checkpointing: the frozen layers recompute their activations, the rows get the same gradients."""

from __future__ import annotations

import torch

from conftest import compose
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.model.load import load_backbone
from yochameleon.model.personalized import PersonalizedChameleon


def _rows_gradients(backbone, gradient_checkpointing: bool, ids, mask, labels):
    """(input_rows.grad, output_rows.grad, loss, decoder-layer forward calls) after one training step's backward."""
    torch.manual_seed(0)
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 4, 3,
                                              "<reserved16200>")
    model = PersonalizedChameleon(backbone.model, [tokens], 0.5, gradient_checkpointing=gradient_checkpointing)
    model.train()
    calls = []
    hook = backbone.model.model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = model(ids, mask, labels)
        out["loss"].backward()
    finally:
        hook.remove()
    return tokens.input_rows.grad.clone(), tokens.output_rows.grad.clone(), out["loss"].detach(), len(calls)


def test_gradients_equal_the_plain_step(tiny_path):
    # Two copies of the tiny backbone: enabling checkpointing changes the model it is applied to.
    plain_backbone = load_backbone(tiny_path, name="tiny")
    checkpointed_backbone = load_backbone(tiny_path, name="tiny")
    tokens = PersonalizedTokens.from_backbone(plain_backbone.model, plain_backbone.config.vocabulary_map, "bo", 4, 3,
                                              "<reserved16200>")
    concept_ids = tokens.token_ids.tolist()
    image_ids = plain_backbone.image_map.image_token_ids
    generator = torch.Generator().manual_seed(0)
    # Two rows of different length (right padded), as training builds them: an image sample and a short text one.
    long = [0, *concept_ids, *image_ids[torch.randint(len(image_ids), (256,), generator=generator)].tolist(), 9001]
    short = [0, *concept_ids, 9001, 9002, 9003, concept_ids[0], 9004]
    length = len(long)
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    ids[0], mask[0] = torch.tensor(long), 1
    ids[1, :len(short)], mask[1, :len(short)] = torch.tensor(short), 1
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    labels[:, :len(concept_ids) + 1] = -100

    g_in, g_out, loss, plain_calls = _rows_gradients(plain_backbone, False, ids, mask, labels)
    c_in, c_out, c_loss, checkpointed_calls = _rows_gradients(checkpointed_backbone, True, ids, mask, labels)

    assert checkpointed_backbone.model.is_activation_checkpointing and not plain_backbone.model.is_activation_checkpointing
    # The checkpointed layers ran again in the backward pass (one recompute per length group).
    assert checkpointed_calls == 2 * plain_calls
    assert g_in.abs().sum() > 0 and g_out.abs().sum() > 0  # gradients reach both kinds of rows
    assert torch.equal(loss, c_loss)
    torch.testing.assert_close(c_in, g_in, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(c_out, g_out, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in checkpointed_backbone.model.parameters())  # the backbone stays frozen


def test_training_config_has_it_off_by_default(tmp_path):
    cfg = compose(["+concept=toy-bo"], tmp_path)
    assert cfg.trainer.gradient_checkpointing is False
