"""chunked_causal_lm_loss (from hidden states and the tied embedding, chunk by chunk) equals the
cross-entropy of the full logits: values and gradients, with and without packed documents."""

import pytest
import torch

from cdssm.models.lm_loss import IGNORE_INDEX, causal_lm_loss, chunked_causal_lm_loss


def inputs(B, T, d=16, V=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, d, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(V, (B, T), generator=g)
    labels[:, 3] = IGNORE_INDEX
    return hidden, weight, labels


@pytest.mark.parametrize("vocab_align", [1, 64])  # V = 37: unpadded, and padded to 64 rows
@pytest.mark.parametrize("chunk_tokens", [1, 7, 64, 4096])
@pytest.mark.parametrize("packed", [False, True])
def test_chunked_equals_full_cross_entropy(chunk_tokens, packed, vocab_align):
    B, T = (1, 50) if packed else (3, 20)
    hidden, weight, labels = inputs(B, T)
    cu = torch.tensor([0, 9, 10, 31, 50], dtype=torch.int32) if packed else None
    full = causal_lm_loss(hidden @ weight.T, labels, cu)
    full_grads = torch.autograd.grad(full, (hidden, weight))
    chunked = chunked_causal_lm_loss(hidden, weight, labels, cu, chunk_tokens=chunk_tokens,
                                     vocab_align=vocab_align)
    grads = torch.autograd.grad(chunked, (hidden, weight))
    torch.testing.assert_close(chunked, full.float(), rtol=1e-6, atol=1e-6)
    for g, ref in zip(grads, full_grads):
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)


def test_model_loss_is_chunked_cross_entropy_of_its_logits(tiny_config):
    from cdssm.models import CDSSMForCausalLM

    torch.manual_seed(0)
    model = CDSSMForCausalLM(tiny_config)
    ids = torch.randint(tiny_config.vocab_size, (2, 70))
    out = model(ids, labels=ids)
    logits = model(ids).logits
    torch.testing.assert_close(out.loss, causal_lm_loss(logits, ids) + out.aux_loss)


@pytest.mark.parametrize("vocab_align", [0, -64, 64.0])
def test_chunked_rejects_a_bad_vocab_align(vocab_align):
    hidden, weight, labels = inputs(1, 8)
    with pytest.raises(ValueError, match="vocab_align"):
        chunked_causal_lm_loss(hidden, weight, labels, vocab_align=vocab_align)
