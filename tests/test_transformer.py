"""TransformerConfig and TransformerForCausalLM: derivation, masks, cache, loss, save/load,
compile."""

import math

import pytest
import torch
import torch.nn.functional as F

from cdssm.models.attention import KVCache
from cdssm.models.lm_loss import IGNORE_INDEX
from cdssm.models.parameters import count_parameters
from cdssm.models.transformer import TransformerConfig, TransformerForCausalLM

V = 61


def make_model(d=64, n=2, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return TransformerForCausalLM(TransformerConfig(d, n, 128, V)).to(dtype)


def tokens(*shape, seed=1):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


# (d_model, n_layers, n_heads, hidden, out_init_std)
DERIVED = [
    (64, 1, 1, 192, 0.02 / math.sqrt(2)),
    (128, 2, 2, 384, 0.01),
    (768, 12, 12, 2048, 0.02 / math.sqrt(24)),
    (1024, 24, 16, 2752, 0.02 / math.sqrt(48)),
]


@pytest.mark.parametrize("d,n,H,hidden,out_std", DERIVED)
def test_config_derivation(d, n, H, hidden, out_std):
    c = TransformerConfig(d, n, 1024, 50257)
    assert (c.head_dim, c.n_heads, c.hidden) == (64, H, hidden)
    assert (c.rope_base, c.rms_norm_eps, c.init_std) == (10000.0, 1e-5, 0.02)
    assert c.out_init_std == pytest.approx(out_std)
    assert TransformerConfig.from_dict(c.to_dict()) == c
    assert c.to_dict() == {"d_model": d, "n_layers": n, "context_length": 1024, "vocab_size": 50257}


@pytest.mark.parametrize("args,field", [
    ((100, 2, 64, 50), "d_model"),
    ((0, 2, 64, 50), "d_model"),
    ((128.0, 2, 64, 50), "d_model"),
    ((128, 0, 64, 50), "n_layers"),
    ((128, True, 64, 50), "n_layers"),
    ((128, 2, 1, 50), "context_length"),
    ((128, 2, 64, 1), "vocab_size"),
])
def test_config_errors(args, field):
    with pytest.raises(ValueError, match=field):
        TransformerConfig(*args)


@pytest.mark.parametrize("values", [
    {"d_model": 64, "n_layers": 1, "context_length": 8},
    {"d_model": 64, "n_layers": 1, "context_length": 8, "vocab_size": 9, "state_pairs": 1},
])
def test_config_from_dict_errors(values):
    with pytest.raises(ValueError, match="values"):
        TransformerConfig.from_dict(values)


def test_parameter_count_and_init():
    with torch.device("meta"):
        model = TransformerForCausalLM(TransformerConfig(768, 12, 1024, 50257))
    per_block = 4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768
    counts = count_parameters(model)
    assert counts["blocks"] == [per_block] * 12
    assert counts["embed"] == 50257 * 768 and counts["lm_head"] == 0  # tied: counted once
    assert counts["total"] == 12 * per_block + 50257 * 768 + 768 == 123_551_232

    model = make_model(d=128, n=4)
    assert model.lm_head.weight is model.embed.weight
    for name, p in model.named_parameters():
        expected = 1.0 if "norm" in name else 0.02 / math.sqrt(8) if name.endswith(
            ("attn.out.weight", "mlp.down.weight")) else 0.02
        if "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert p.std().item() == pytest.approx(expected, rel=0.1), name


@pytest.mark.parametrize("B,T", [(1, 1), (2, 17), (3, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes(B, T, dtype):
    model = make_model(dtype=dtype)
    out = model(tokens(B, T))
    assert out.logits.shape == (B, T, V) and out.logits.dtype == dtype
    assert out.loss is None and out.state is None
    assert out.state_energy is None and out.mean_utility is None
    assert out.aux_loss.shape == () and out.aux_loss.item() == 0


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("B,T", [(1, 2), (2, 19)])
def test_loss_is_shifted_cross_entropy(B, T, ignore):
    model = make_model()
    ids = tokens(B, T)
    labels = ids.clone()
    if ignore:
        labels[:, ::3] = IGNORE_INDEX
    out = model(ids, labels=labels)
    logits = model(ids).logits
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX)
    assert out.logits is None
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)


DOCUMENTS = [[5], [7, 1, 12], [3, 0, 9, 1], [1, 1, 30, 6]]  # 0: an empty document


@pytest.mark.parametrize("lengths", DOCUMENTS)
def test_packed_equals_separate_documents(lengths):
    model = make_model(dtype=torch.float64)
    docs = [tokens(1, n, seed=i) for i, n in enumerate(lengths)]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    packed = model(torch.cat(docs, 1), cu_seqlens=cu).logits
    separate = torch.cat([model(d).logits for d in docs if d.shape[1]], 1)
    torch.testing.assert_close(packed, separate, rtol=0, atol=1e-12)


@pytest.mark.parametrize("B,T,prefill,chunk", [(1, 9, 1, 1), (2, 23, 7, 1), (3, 30, 12, 5)])
def test_prefill_then_decode_equals_full_forward(B, T, prefill, chunk):
    model = make_model()
    ids = tokens(B, T)
    full = model(ids).logits
    out = model(ids[:, :prefill], state=model.init_state(B))
    pieces, state = [out.logits], out.state
    for t in range(prefill, T, chunk):
        out = model(ids[:, t:t + chunk], state=state)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=0, atol=2e-5)
    assert isinstance(state, KVCache) and state.k.shape == (2, B, 1, T, 64)
    assert state.lengths().tolist() == [T] * B


@pytest.mark.parametrize("lengths", DOCUMENTS[1:])
def test_packed_prefill_then_decode_equals_separate(lengths):
    model = make_model()
    docs = [tokens(1, n, seed=i) for i, n in enumerate(lengths)]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    out = model(torch.cat(docs, 1), cu_seqlens=cu, state=model.init_state(len(lengths)))
    assert out.state.lengths().tolist() == lengths
    nxt = tokens(len(lengths), 3, seed=9)
    state = out.state
    for t in range(3):
        step = model(nxt[:, t:t + 1], state=state)
        state = step.state
    for i, doc in enumerate(docs):
        alone = model(torch.cat([doc, nxt[i:i + 1]], 1)).logits[0, -1]
        torch.testing.assert_close(step.logits[i, -1], alone, rtol=0, atol=2e-5)


def test_packed_prefill_continues_a_cache():
    model = make_model()
    first = [tokens(1, 4, seed=0), tokens(1, 6, seed=1)]
    second = [tokens(1, 3, seed=2), tokens(1, 5, seed=3)]
    cu1 = torch.tensor([0, 4, 10], dtype=torch.int32)
    cu2 = torch.tensor([0, 3, 8], dtype=torch.int32)
    state = model(torch.cat(first, 1), cu_seqlens=cu1, state=model.init_state(2)).state
    logits = model(torch.cat(second, 1), cu_seqlens=cu2, state=state).logits
    alone = torch.cat([model(torch.cat([a, b], 1)).logits[:, a.shape[1]:]
                       for a, b in zip(first, second)], 1)
    torch.testing.assert_close(logits, alone, rtol=0, atol=2e-5)


def test_save_load_roundtrip(tmp_path):
    model = make_model()
    model.save_pretrained(str(tmp_path))
    loaded = TransformerForCausalLM.from_pretrained(str(tmp_path))
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.embed.weight
    ids = tokens(2, 11)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


BAD_INPUTS = [
    (lambda m: m(tokens(2, 5).float()), ValueError, "input_ids"),
    (lambda m: m(tokens(2, 0)), ValueError, "input_ids"),
    (lambda m: m(tokens(2, 5), labels=tokens(2, 4)), ValueError, "labels"),
    (lambda m: m(tokens(2, 5), cu_seqlens=torch.tensor([0, 5], dtype=torch.int32)),
     ValueError, "input_ids"),
    (lambda m: m(tokens(1, 5), cu_seqlens=torch.tensor([0, 5.0])), ValueError, "cu_seqlens"),
    (lambda m: m(tokens(1, 5), cu_seqlens=torch.tensor([0, 2, 4], dtype=torch.int32)),
     RuntimeError, "cu_seqlens"),
    (lambda m: m(tokens(1, 5), cu_seqlens=torch.tensor([0, 3, 2, 5], dtype=torch.int32)),
     RuntimeError, "cu_seqlens"),
    (lambda m: m(tokens(2, 5), state=m.init_state(3)), ValueError, "state"),
    (lambda m: m(tokens(2, 5), state=(1, 2)), ValueError, "state"),
    (lambda m: m.init_state(0), ValueError, "batch_size"),
]


@pytest.mark.parametrize("call,error,name", BAD_INPUTS)
def test_bad_inputs(call, error, name):
    with pytest.raises(error, match=name):
        call(make_model(n=1))


@pytest.mark.slow
@pytest.mark.parametrize("packed", [False, True])
def test_compile_fullgraph_matches_eager(packed):
    torch._dynamo.reset()
    model = make_model()
    ids = tokens(1, 24)
    kw = {"cu_seqlens": torch.tensor([0, 5, 6, 24], dtype=torch.int32)} if packed else {}
    compiled = torch.compile(model, fullgraph=True)
    loss = compiled(ids, labels=ids, **kw).loss
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(ids, labels=ids, **kw).loss
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-5, atol=1e-5)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
