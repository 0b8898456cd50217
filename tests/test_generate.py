"""generate / stream / sample_next for every architecture: determinism, sampling filters, stops,
batch invariance of packed prefill + batched decode, prefill + decode = the full forward,
logits at chosen positions, the CUDA-graph decode (on a GPU), argument checks."""

import pytest
import torch

from cdssm.inference.generate import ModelRunner, generate, sample_next, stream
from cdssm.models.registry import ARCHITECTURES, build_model

V = 53
PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11], [12, 13]]


def make_model(arch, dtype=torch.float32):
    """A tiny model whose matrices are redrawn at N(0, (1.5/√fan_in)²): at the real init a tied
    embedding makes an untrained LM echo its last token, which would hide decoding bugs."""
    torch.manual_seed(0)
    model = build_model(arch, 64, 2, 64, V).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
    return model


@pytest.fixture(params=sorted(ARCHITECTURES), scope="module")
def model(request):
    return make_model(request.param)


def test_greedy_is_deterministic_and_ignores_the_seed(model):
    first = generate(model, PROMPTS, 8, temperature=0)
    assert generate(model, PROMPTS, 8, temperature=0, seed=3) == first
    assert [len(t) for t in first] == [8] * len(PROMPTS)
    assert len({tuple(t) for t in first}) > 1  # the model does not just echo


def test_batched_prompts_match_each_prompt_alone(model):
    model64 = make_model(model.arch, torch.float64)
    together = generate(model64, PROMPTS, 10, temperature=0)
    alone = [generate(model64, [p], 10, temperature=0)[0] for p in PROMPTS]
    assert together == alone


@pytest.mark.parametrize("kw", [{}, {"top_k": 5}, {"top_p": 0.9}, {"temperature": 2.0}])
def test_seeds(model, kw):
    a = generate(model, PROMPTS, 12, seed=7, **kw)
    assert generate(model, PROMPTS, 12, seed=7, **kw) == a
    assert generate(model, PROMPTS, 12, seed=8, **kw) != a


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}])
def test_filters_that_leave_one_token_are_greedy(model, kw):
    assert generate(model, PROMPTS, 6, seed=0, **kw) == generate(model, PROMPTS, 6, temperature=0)


def test_stop_tokens(model):
    greedy = generate(model, PROMPTS, 8, temperature=0)
    stop = greedy[2][3]
    out = generate(model, PROMPTS, 8, temperature=0, stop_tokens=[stop])
    for full, cut in zip(greedy, out):
        assert cut == (full[:full.index(stop)] if stop in full else full)
    steps = list(stream(model, PROMPTS, 8, temperature=0, stop_tokens=[stop]))
    assert [s[2] for s in steps][3:] == [None] * (len(steps) - 3)


def test_stream_ends_when_every_sequence_stopped(model):
    greedy = generate(model, PROMPTS, 4, temperature=0)
    first_tokens = sorted({g[0] for g in greedy})
    assert list(stream(model, PROMPTS, 4, temperature=0, stop_tokens=first_tokens)) == \
        [(None,) * len(PROMPTS)]
    assert generate(model, PROMPTS, 0) == [[] for _ in PROMPTS]


@pytest.mark.parametrize("packed", [False, True])
def test_logit_positions_select_rows_of_the_full_logits(model, packed):
    ids = torch.randint(0, V, (1 if packed else 3, 20), generator=torch.Generator().manual_seed(0))
    kw = dict(cu_seqlens=torch.tensor([0, 7, 20], dtype=torch.int32)) if packed else {}
    positions = torch.tensor([6, 19, 0, 6])
    with torch.no_grad():
        full = model(ids, **kw).logits
        some = model(ids, logit_positions=positions, **kw).logits
    torch.testing.assert_close(some, full[:, positions], rtol=1e-6, atol=1e-6)


def test_logit_positions_errors(model):
    ids = torch.zeros(1, 4, dtype=torch.long)
    for bad in (torch.tensor([[1]]), torch.tensor([1.0]), [1]):
        with pytest.raises(ValueError, match="logit_positions"):
            model(ids, logit_positions=bad)
    with pytest.raises(ValueError, match="logit_positions: only without labels"):
        model(ids, labels=ids, logit_positions=torch.tensor([1]))


def test_runner_prefill_and_steps_equal_the_full_forward(model):
    """Packed prefill logits (one row per prompt) and each batched decode step's logits equal the
    full forward of each prompt followed by the decoded tokens (float64)."""
    model64 = make_model(model.arch, torch.float64)
    runner = ModelRunner(model64)
    logits, state = runner.prefill(PROMPTS)
    sequences = [list(p) for p in PROMPTS]
    for _ in range(3):
        with torch.no_grad():
            alone = torch.stack([model64(torch.tensor([s])).logits[0, -1] for s in sequences])
        torch.testing.assert_close(logits, alone, rtol=1e-10, atol=1e-10)
        tokens = logits.argmax(-1)
        for s, t in zip(sequences, tokens.tolist()):
            s.append(t)
        logits, state = runner.step(tokens, state)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kw", [{"temperature": 0}, {"seed": 3}, {"top_k": 5, "top_p": 0.9, "seed": 4}])
def test_cuda_graph_decode_gives_the_eager_tokens(kw, dtype):
    model = make_model("cdssm").to(device="cuda", dtype=dtype)
    eager = generate(model, PROMPTS, 12, **kw)
    assert generate(model, PROMPTS, 12, cuda_graph=True, **kw) == eager
    assert generate(model, PROMPTS[:2], 12, cuda_graph=True, **kw) == \
        generate(model, PROMPTS[:2], 12, **kw)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_decode_needs_a_fixed_size_state():
    with pytest.raises(ValueError, match="fixed shapes"):
        generate(make_model("transformer").cuda(), PROMPTS, 4, cuda_graph=True)


# logits of one row: probabilities 0.5, 0.3, 0.15, 0.05 for tokens 3, 0, 2, 1
PROBS = torch.tensor([0.3, 0.05, 0.15, 0.5])


@pytest.mark.parametrize("top_k,top_p,support", [
    (None, None, {0, 1, 2, 3}),
    (1, None, {3}),
    (2, None, {0, 3}),
    (3, None, {0, 2, 3}),
    (None, 0.5, {3}),
    (None, 0.7, {0, 3}),
    (None, 0.9, {0, 2, 3}),
    (None, 1.0, {0, 1, 2, 3}),
    (3, 0.7, {0, 3}),
])
def test_sample_next_support(top_k, top_p, support):
    logits = PROBS.log().expand(4000, 4)
    drawn = sample_next(logits, 1.0, top_k, top_p, torch.Generator().manual_seed(0))
    assert drawn.shape == (4000,) and drawn.dtype == torch.int64
    assert set(drawn.tolist()) == support


def test_sample_next_frequencies_and_greedy():
    logits = PROBS.log().expand(20000, 4)
    drawn = sample_next(logits, 1.0, None, None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(drawn, minlength=4) / 20000.0, PROBS,
                               rtol=0, atol=0.015)
    greedy = sample_next(logits, 0, None, None, torch.Generator())
    assert set(greedy.tolist()) == {3}


BAD_ARGUMENTS = [
    ({"model": object()}, "model"),
    ({"prompts": []}, "prompts"),
    ({"prompts": [[1], []]}, "prompts"),
    ({"prompts": [[1, V]]}, "prompts"),
    ({"prompts": [[1, -1]]}, "prompts"),
    ({"prompts": [[1.0]]}, "prompts"),
    ({"prompts": "abc"}, "prompts"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"max_new_tokens": 2.0}, "max_new_tokens"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"stop_tokens": [V]}, "stop_tokens"),
    ({"stop_tokens": 3}, "stop_tokens"),
    ({"seed": "1"}, "seed"),
    ({"cuda_graph": 1}, "cuda_graph"),
    pytest.param({"cuda_graph": True}, "cuda_graph: needs the model on a CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="model on CPU")),
]


@pytest.mark.parametrize("change,name", BAD_ARGUMENTS)
@pytest.mark.parametrize("function", [generate, stream])
def test_argument_errors(model, function, change, name):
    arguments = {"model": model, "prompts": [[1, 2]], "max_new_tokens": 3, **change}
    with pytest.raises(ValueError, match=name):
        function(**arguments)
