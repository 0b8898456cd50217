"""CDSSMForCausalLM (spec/model.md): sizes, initialisation, forward contract, varlen, state,
checkpoints, the EMA update, gradients and torch.compile. CPU, tiny configs (conftest.py)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from cdssm.config import CDSSMConfig
from cdssm.models import CDSSMForCausalLM, CDSSMState, count_parameters
from cdssm.models.cdssm import l2_normalize, spectral_dynamics_bias, spectral_timescales

from conftest import TINY_CDSSM


def make_model(config, seed=0, dtype=torch.float32, ema=False):
    """A model with seeded weights; ``ema`` fills the buffers with positive energies (so that the
    W_sg·ema path is live)."""
    torch.manual_seed(seed)
    model = CDSSMForCausalLM(config).to(dtype)
    if ema:
        model.update_state_energy_ema(5 + torch.rand(config.n_layers, config.n_heads))
    return model


def tokens(config, *shape, seed=1):
    return torch.randint(0, config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def pairs(P):
    return CDSSMConfig(**TINY_CDSSM, state_pairs=P)


# ---- sizes ------------------------------------------------------------------------------------
# d=768, n=12, Lc=1024, V=50257: the spec's size check (P = 1); each extra pair adds
# 2H·(d + 1) (in_proj v rows) + 2H·(E + 1) (dynamics_proj) + 2H·E (readout_proj) = 184,416.
@pytest.mark.parametrize("P,per_block,total", [
    (1, 7_464_984, 128_177_952),
    (4, 7_464_984 + 3 * 184_416, 128_177_952 + 12 * 3 * 184_416),
    (8, 7_464_984 + 7 * 184_416, 128_177_952 + 12 * 7 * 184_416),
])
def test_parameter_counts(P, per_block, total):
    with torch.device("meta"):
        model = CDSSMForCausalLM(CDSSMConfig(768, 12, 1024, 50257, state_pairs=P))
    counts = count_parameters(model)
    print(f"\nP = {P}\n{counts}")
    assert counts["blocks"] == [per_block] * 12
    assert counts["embed"] == 50257 * 768 and counts["norm"] == 768 and counts["lm_head"] == 0
    assert counts["total"] == total


# ---- initialisation ---------------------------------------------------------------------------
@pytest.mark.parametrize("config", [CDSSMConfig(768, 12, 1024, 50257), pairs(2),
                                    CDSSMConfig(128, 1, 4096, 97, state_pairs=3)])
def test_spectral_bias(config):
    H, P, n = config.n_heads, config.state_pairs, config.n_layers
    R = math.log(config.context_length)
    for layer in range(n):
        bias = spectral_dynamics_bias(config, layer)
        alpha_bias, omega_bias = bias.view(2, H, P)
        theta = 1 / F.softplus(alpha_bias)  # α = 1/θ at init
        torch.testing.assert_close(theta, spectral_timescales(config, layer), rtol=1e-9, atol=0)
        # θ_{h,p} = exp(linspace(bs, be, HP)[p·H + h]): strictly increasing in p·H + h
        by_index = theta.T.flatten()
        assert (by_index.diff() > 0).all()
        bs = layer / max(n - 1, 1) * (R / 2)
        assert math.isclose(by_index[0].item(), math.exp(bs), rel_tol=1e-9)
        assert math.isclose(by_index[-1].item(), math.exp(bs + R / 2), rel_tol=1e-9)
        # ω decreases as θ increases, spanning [e^{−be}, min(0.5, e^{−bs})]
        omega = omega_bias.T.flatten()
        assert (omega.diff() < 0).all() if H * P > 1 else True
        assert math.isclose(omega.min().item(), math.exp(-(bs + R / 2)), rel_tol=1e-9)
        assert math.isclose(omega.max().item(), min(0.5, math.exp(-bs)), rel_tol=1e-9)


def test_init_values():
    config = CDSSMConfig(128, 3, 256, 97, state_pairs=2)  # E = 256, H = 4
    model = make_model(config)
    d, E, H, P, n = 128, 256, 4, 2, 3
    s_io = math.sqrt(2 / (d + E)) / math.sqrt(2 * n)
    for i, block in enumerate(model.blocks):
        torch.testing.assert_close(block.Q_proj.weight, torch.eye(E), rtol=0, atol=0)
        for t in (block.d_skip, block.log_dt_scale, block.group_norm.bias, block.in_proj.bias,
                  block.conv.bias, block.beta_proj.bias, block.ema):
            assert (t == 0).all()
        for t in (block.norm.weight, block.group_norm.weight):
            assert (t == 1).all()
        assert (block.recurrence_gate.bias == 1).all() and (block.utility_gate.bias == -1).all()
        torch.testing.assert_close(block.read_gate.bias, torch.full((H,), math.log(2)))
        torch.testing.assert_close(block.dynamics_proj.bias.double(),
                                   spectral_dynamics_bias(config, i))
        assert block.ema.dtype == torch.float32 and "ema" in dict(block.named_buffers())
        stds = [
            (block.in_proj.weight[:3 * E], s_io), (block.in_proj.weight[3 * E:], s_io / 8),
            (block.out_proj.weight, s_io), (block.conv.weight, 0.5),
            (block.dynamics_proj.weight, math.sqrt(1 / E) / math.sqrt(2 * n) / math.sqrt(n)),
            (block.W_sg, 0.01), (block.readout_proj.weight, math.sqrt(1 / (2 * P * H))),
            *((getattr(block, name).weight, math.sqrt(1 / E)) for name in
              ("selection_dt", "beta_proj", "read_gate", "recurrence_gate", "utility_gate")),
        ]
        for weight, std in stds:
            # the sample std of N normal draws is off by ~1/√(2N): allow six of those
            assert abs(weight.std().item() / std - 1) < 6 / math.sqrt(2 * weight.numel()), \
                (weight.shape, std)
    assert abs(model.embed.weight.std().item() * math.sqrt(d) - 1) < 0.05
    assert model.lm_head.weight is model.embed.weight
    assert block.selection_dt.bias is None


# ---- forward contract -------------------------------------------------------------------------
@pytest.mark.parametrize("P", [1, 2])
@pytest.mark.parametrize("B,T", [(2, 70), (3, 5), (1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_shapes_and_dtypes(B, T, P, dtype):
    config = pairs(P)
    model = make_model(config, dtype=dtype)
    n, H, E, V = config.n_layers, config.n_heads, config.d_inner, config.vocab_size
    out = model(tokens(config, B, T))
    assert out.logits.shape == (B, T, V) and out.logits.dtype == dtype
    assert out.loss is None and out.state is None
    assert out.aux_loss.shape == () and out.aux_loss.requires_grad
    assert out.state_energy.shape == (n, H) and not out.state_energy.requires_grad
    assert out.mean_utility.shape == (n,) and not out.mean_utility.requires_grad
    assert torch.isfinite(out.logits).all() and (out.state_energy >= 0).all()

    out = model(tokens(config, B, T), state=model.init_state(B))
    assert out.state.conv.shape == (n, B, E, 3) and out.state.conv.dtype == dtype
    assert out.state.ssm.shape == (n, B, H, 2 * P, 64) and out.state.ssm.dtype == dtype


def test_loss_is_cross_entropy_plus_metabolic(tiny_config):
    model = make_model(tiny_config, ema=True)
    ids, labels = tokens(tiny_config, 2, 40), tokens(tiny_config, 2, 40, seed=2)
    labels[0, 10:15] = -100
    plain = model(ids)
    out = model(ids, labels=labels)
    assert out.logits is None
    ce = F.cross_entropy(plain.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                         ignore_index=-100)
    aux = tiny_config.metabolic_weight * plain.mean_utility.mean()
    torch.testing.assert_close(out.aux_loss, aux)
    torch.testing.assert_close(out.loss, ce + aux)
    # the metabolic term is differentiable: it reaches the utility gate alone
    out.aux_loss.backward()
    assert all(b.utility_gate.bias.grad.abs().sum() > 0 for b in model.blocks)


def test_packed_labels_never_cross_documents(tiny_config):
    model = make_model(tiny_config)
    cu = torch.tensor([0, 5, 12, 20], dtype=torch.int32)
    ids = tokens(tiny_config, 1, 20)
    labels = ids.clone()
    loss = model(ids, labels=labels, cu_seqlens=cu).loss
    logits = model(ids, cu_seqlens=cu).logits[0]
    positions = [t for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()) for t in range(a, b - 1)]
    ce = F.cross_entropy(logits[positions], labels[0, [t + 1 for t in positions]])
    torch.testing.assert_close(loss, ce + model(ids, cu_seqlens=cu).aux_loss)
    # a document's first token is no target: changing it leaves the loss unchanged
    labels[0, [5, 12]] = (labels[0, [5, 12]] + 1) % tiny_config.vocab_size
    torch.testing.assert_close(model(ids, labels=labels, cu_seqlens=cu).loss, loss)


# ---- varlen and state -------------------------------------------------------------------------
@pytest.mark.parametrize("P", [1, 2])
def test_packed_equals_separate_documents(P):
    config = pairs(P)
    model = make_model(config, ema=True)
    lengths = [5, 70, 1, 33]
    docs = [tokens(config, 1, L, seed=10 + i) for i, L in enumerate(lengths)]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    packed = model(torch.cat(docs, 1), cu_seqlens=cu, state=model.init_state(len(docs)))
    separate = [model(doc, state=model.init_state(1)) for doc in docs]
    torch.testing.assert_close(packed.logits, torch.cat([o.logits for o in separate], 1),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.state.ssm, torch.cat([o.state.ssm for o in separate], 1),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.state.conv, torch.cat([o.state.conv for o in separate], 1))
    energy = torch.stack([o.state_energy for o in separate]).mean(0)  # mean over documents
    torch.testing.assert_close(packed.state_energy, energy, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("P", [1, 2])
def test_prefill_then_decode_matches_full_forward(P):
    config = pairs(P)
    model = make_model(config, ema=True)
    B, T0, T = 2, 70, 80
    ids = tokens(config, B, T)
    full = model(ids).logits
    out = model(ids[:, :T0], state=model.init_state(B))
    torch.testing.assert_close(out.logits, full[:, :T0], rtol=1e-5, atol=1e-5)
    state = out.state
    for t in range(T0, T):
        out = model(ids[:, t:t + 1], state=state)
        torch.testing.assert_close(out.logits[:, 0], full[:, t], rtol=1e-5, atol=1e-5)
        state = out.state


@pytest.mark.parametrize("T,scan", [(1, "recurrent_delta_scan"), (2, "chunk_delta_scan")])
def test_decode_step_uses_the_recurrent_scan(tiny_config, monkeypatch, T, scan):
    import cdssm.models.cdssm as module

    calls = []
    def spy(name):
        scan = getattr(module, name)
        return lambda *args, **kwargs: calls.append(name) or scan(*args, **kwargs)

    for name in ("recurrent_delta_scan", "chunk_delta_scan"):
        monkeypatch.setattr(module, name, spy(name))
    model = make_model(tiny_config)
    model(tokens(tiny_config, 2, T), state=model.init_state(2))
    assert calls == [scan] * tiny_config.n_layers


def test_bf16_autocast(tiny_config):
    """CPU bf16 autocast: activations bf16, the scan state and the statistics fp32, the conv state
    in the dtype it came in (so that a decode loop keeps one state type)."""
    model = make_model(tiny_config, ema=True)
    ids = tokens(tiny_config, 2, 70)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids, state=model.init_state(2))
        out.loss.backward()
        step = model(ids[:, :1], state=out.state)
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    assert out.state.conv.dtype == step.state.conv.dtype == torch.float32
    assert out.state.ssm.dtype == step.state.ssm.dtype == torch.float32
    assert out.state_energy.dtype == out.mean_utility.dtype == torch.float32
    assert step.logits.dtype == torch.bfloat16 and torch.isfinite(step.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ---- checkpoints and the EMA ------------------------------------------------------------------
def test_save_load_roundtrip(tmp_path):
    config = pairs(2)
    model = make_model(config, ema=True)
    model.save_pretrained(str(tmp_path))
    loaded = CDSSMForCausalLM.from_pretrained(str(tmp_path))
    assert loaded.config == config
    assert loaded.lm_head.weight is loaded.embed.weight
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert (loaded.blocks[1].ema != 0).all() and loaded.blocks[1].ema.dtype == torch.float32
    ids = tokens(config, 2, 20)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("context_length,P", [(128, 1), (2 ** 20, 1), (2 ** 20, 3)])
def test_ema_update(context_length, P):
    config = CDSSMConfig(64, 2, context_length, 97, state_pairs=P)
    model = make_model(config)
    n, H = config.n_layers, config.n_heads
    g = torch.Generator().manual_seed(0)
    before = torch.rand(n, H, generator=g)
    for block, e in zip(model.blocks, before):
        block.ema.copy_(e)
    energy = 10 * torch.rand(n, H, generator=g)
    model.update_state_energy_ema(energy)
    decays = []
    for i, block in enumerate(model.blocks):
        alpha = F.softplus(block.dynamics_proj.bias.double()[:H * P]).view(H, P)
        theta_h = torch.exp((-alpha.log()).mean(1))  # geometric mean of θ = 1/α over pairs
        d = (1 - 1 / theta_h).clamp(0.9, 0.999)
        decays.append(d)
        want = d * before[i].double() + (1 - d) * energy[i].double()
        torch.testing.assert_close(block.ema.double(), want, rtol=1e-6, atol=0)
    decays = torch.cat(decays)
    if context_length > 2 ** 16 and P == 1:  # the clamp binds at both ends
        assert decays.min() == 0.9 and decays.max() == 0.999


def test_forward_reads_ema_without_writing(tiny_config):
    model = make_model(tiny_config, ema=True)
    ema = [b.ema.clone() for b in model.blocks]
    ids = tokens(tiny_config, 2, 10)
    before = model(ids, labels=ids)
    before.loss.backward()
    assert all(torch.equal(b.ema, e) for b, e in zip(model.blocks, ema))
    model.update_state_energy_ema(before.state_energy)
    after = model(ids, labels=ids)
    assert not torch.equal(after.loss, before.loss)  # υ depends on ema through W_sg


# ---- gradients and compile --------------------------------------------------------------------
@pytest.mark.parametrize("P,packed", [(1, False), (2, False), (2, True)])
def test_every_parameter_gets_a_finite_gradient(P, packed):
    config = pairs(P)
    model = make_model(config, ema=True)
    if packed:
        ids, cu = tokens(config, 1, 90), torch.tensor([0, 30, 31, 90], dtype=torch.int32)
    else:
        ids, cu = tokens(config, 2, 70), None
    model(ids, labels=ids, cu_seqlens=cu).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def training_step(model, forward, ids):
    """One forward (``forward``: the model or its compiled form) and backward; the gradients."""
    model.zero_grad(set_to_none=True)
    out = forward(ids, labels=ids)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_compiled_forward_backward_matches_eager(tiny_config):
    torch._dynamo.reset()
    model = make_model(tiny_config, ema=True)
    ids = tokens(tiny_config, 2, 70)
    eager_out, eager_grads = training_step(model, model, ids)
    compiled = torch.compile(model, fullgraph=True)
    out, grads = training_step(model, compiled, ids)
    torch.testing.assert_close(out.loss, eager_out.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.state_energy, eager_out.state_energy, rtol=1e-5, atol=1e-6)
    for name, g in eager_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
    # the ema buffers are graph inputs: the compiled forward sees the trainer's update
    model.update_state_energy_ema(eager_out.state_energy)
    out, _ = training_step(model, compiled, ids)
    eager_out, _ = training_step(model, model, ids)
    torch.testing.assert_close(out.loss, eager_out.loss, rtol=1e-5, atol=1e-6)


class SubclassedLinear(torch.nn.Linear):
    """Stands for torchao's Float8Linear, an nn.Linear subclass with its own forward."""


@pytest.mark.parametrize("P, subclassed", [(1, False), (2, False), (2, True)])
def test_in_proj_split_is_the_one_matmul(P, subclassed):
    """The block's two in_proj matmuls (or, for an nn.Linear subclass, its own forward) give the
    one matmul's gate, xg, k_raw, v_raw (float64)."""
    config = pairs(P)
    block = make_model(config, dtype=torch.float64).blocks[0]
    if subclassed:
        plain = block.in_proj
        block.in_proj = SubclassedLinear(plain.in_features, plain.out_features,
                                         dtype=torch.float64)
        block.in_proj.load_state_dict(plain.state_dict())
    xn = torch.randn(2, 9, config.d_model, dtype=torch.float64)
    E = config.d_inner
    whole = block.in_proj(xn).split([E, E, E, 2 * P * config.n_heads], -1)
    for got, expected in zip(block._in_proj(xn), whole, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


def spec_block_forward(block, x):
    """Steps 1–12 of spec/model.md written literally, each projection its own module call and
    F.group_norm: the reference for the block's fused forward (no state, no cu_seqlens)."""
    from cdssm.ops import causal_conv1d_silu, chunk_delta_scan
    from cdssm.ops.dynamics import adaptive_timestep, fixed_timestep, scan_inputs

    c, (B, T, _) = block.config, x.shape
    E, H, P, D = c.d_inner, c.n_heads, c.state_pairs, c.head_dim
    gate, xg, k_raw, v_raw = block.in_proj(block.norm(x)).split([E, E, H * D, 2 * P * H], -1)
    x_c = causal_conv1d_silu(xg, block.conv.weight, block.conv.bias)[0]
    alpha, omega = block.dynamics_proj(x_c).view(B, T, 2, H, P).unbind(2)
    alpha, selection = F.softplus(alpha), block.selection_dt(x_c).unsqueeze(-1)
    kappa = block.log_dt_scale.unsqueeze(-1)
    if c.adaptive_dt:
        dt = adaptive_timestep(alpha, omega, kappa, selection, dt_eps=c.dt_eps,
                               dt_margin=c.dt_margin, rotation_threshold=c.rotation_threshold,
                               rotation_width=c.rotation_width)
    else:
        dt = fixed_timestep(kappa, selection)
    r = (torch.sigmoid(block.recurrence_gate(x_c)) if c.recurrence_gate
         else torch.ones((), dtype=x.dtype))
    beta, read = torch.sigmoid(block.beta_proj(x_c)), torch.sigmoid(block.read_gate(x_c))
    utility = torch.sigmoid(block.utility_gate(x_c) + block.W_sg @ block.ema.to(x.dtype))
    decay = scan_inputs(alpha, omega, dt, r.unsqueeze(-1),
                        c.gating_constant if c.recurrence_gate else 1.0)
    k = l2_normalize(k_raw.view(B, T, H, D), c.l2_norm_eps)
    q = l2_normalize(block.Q_proj(x_c).view(B, T, H, D), c.l2_norm_eps)
    value_scale, beta_eff = decay.value_scale, beta * utility
    if c.utility == "value":
        value_scale, beta_eff = value_scale * utility.unsqueeze(-1), beta
    v = v_raw.view(B, T, H, P, 2) * value_scale.unsqueeze(-1)
    y = chunk_delta_scan(q, k, v, beta_eff, decay.log_decay, decay.phase,
                         chunk_size=c.chunk_size)[0]
    ret = block.readout_proj((read.view(B, T, H, 1, 1) * y).flatten(2))
    gn = F.group_norm(ret.reshape(B * T, E), c.norm_groups, block.group_norm.weight,
                      block.group_norm.bias, c.group_norm_eps).view(B, T, E)
    return x + block.out_proj(gn * F.silu(gate) + block.d_skip * x_c)


@pytest.mark.parametrize("options", [
    dict(), dict(state_pairs=2), dict(recurrence_gate=False), dict(adaptive_dt=False),
    dict(utility="value"),
])
def test_block_forward_is_the_spec_written_literally(options):
    config = CDSSMConfig(**TINY_CDSSM, **options)
    block = make_model(config, dtype=torch.float64, ema=True).blocks[1]
    with torch.no_grad():  # every bias and gain away from its initial value
        for name, p in block.named_parameters():
            if name.endswith("bias") or "norm" in name or name == "d_skip":
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 70, config.d_model, dtype=torch.float64)
    torch.testing.assert_close(block(x).hidden, spec_block_forward(block, x),
                               rtol=1e-12, atol=1e-12)


def set_selective_recompute(model, on: bool):
    for block in model.blocks:
        block.selective_recompute = on


@pytest.mark.parametrize("packed", [False, True])
def test_selective_recompute_matches_keeping_everything(tiny_config, packed):
    """The recomputed backward is the same backward, in float64."""
    model = make_model(tiny_config, dtype=torch.float64, ema=True)
    ids, cu = tokens(tiny_config, 1, 90), torch.tensor([0, 30, 31, 90], dtype=torch.int32)
    ids, cu = (ids, cu) if packed else (tokens(tiny_config, 2, 70), None)
    results = []
    for on in (False, True):
        set_selective_recompute(model, on)
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=ids, cu_seqlens=cu)
        out.loss.backward()
        results.append((out.loss, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (kept_loss, kept), (loss, grads) = results
    torch.testing.assert_close(loss, kept_loss, rtol=0, atol=0)
    for name, g in kept.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-12, atol=1e-14, msg=name)


def saved_activation_bytes(block, x) -> int:
    """Bytes of the storages the compiled block's forward keeps for its backward (each storage
    once, however many views of it are saved), parameters and x excluded."""
    own = {t.untyped_storage().data_ptr() for t in (*block.parameters(), x)}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: block(x).hidden, fullgraph=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        compiled(x).sum().backward()
    return sum(saved.values())


def test_selective_recompute_keeps_only_matmul_and_op_outputs():
    """Compiled (fp32, B 1, T 512, d 64, E 128): recomputation keeps the in_proj output (3E + 2H),
    x_c, the per-head projections (7H), Q_proj's and readout's outputs (E each) and the scan's
    small outputs, 6.2E floats per token (measured); keeping everything, 7.9E (11.0E while the
    conv input was copied and the normalised q, k were stored rather than made in the scan)."""
    config = CDSSMConfig(64, 2, 512, 97)
    torch.manual_seed(0)
    block = CDSSMForCausalLM(config).blocks[0]
    x = torch.randn(1, 512, 64, requires_grad=True)
    E, T = config.d_inner, 512
    block.selective_recompute = False
    kept = saved_activation_bytes(block, x) / (4 * T * E)
    block.selective_recompute = True
    recomputed = saved_activation_bytes(block, x) / (4 * T * E)
    assert recomputed < 7.0, recomputed
    assert 7.5 < kept < 9.0, kept


# (name, forward arguments): the training, packed, prefill and decode calls
def graph_cases(config, model):
    packed = torch.tensor([0, 30, 31, 90], dtype=torch.int32)
    return {
        "train": dict(input_ids=tokens(config, 2, 70), labels=tokens(config, 2, 70)),
        "packed": dict(input_ids=tokens(config, 1, 90), labels=tokens(config, 1, 90),
                       cu_seqlens=packed),
        "prefill": dict(input_ids=tokens(config, 2, 70), state=model.init_state(2)),
        "decode": dict(input_ids=tokens(config, 2, 1), state=model.init_state(2)),
    }


@pytest.mark.parametrize("case", ["train", "packed", "prefill", "decode"])
def test_no_graph_breaks(tiny_config, case):
    torch._dynamo.reset()
    model = make_model(tiny_config)
    explanation = torch._dynamo.explain(model)(**graph_cases(tiny_config, model)[case])
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_new_sequence_lengths_recompile_at_most_once(tiny_config):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = make_model(tiny_config)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for T in (70, 100, 150, 200):
        ids = tokens(tiny_config, 2, T)
        compiled(ids, labels=ids)
    assert counter.frame_count <= 2


# ---- argument checks --------------------------------------------------------------------------
def bad_calls(config, model):
    ids = tokens(config, 2, 8)
    state = model.init_state(2)
    return [
        ("input_ids", dict(input_ids=ids.float())),
        ("input_ids", dict(input_ids=ids[0])),
        ("labels", dict(input_ids=ids, labels=ids[:, :4])),
        ("cu_seqlens", dict(input_ids=ids, cu_seqlens=torch.tensor([0, 4, 8], dtype=torch.int32))),
        ("cu_seqlens", dict(input_ids=ids[:1], cu_seqlens=torch.tensor([0.0, 8.0]))),
        ("state", dict(input_ids=ids, state=(state.conv, state.ssm))),
        ("state", dict(input_ids=ids, state=model.init_state(3))),
        ("state", dict(input_ids=ids[:1], cu_seqlens=torch.tensor([0, 3, 8], dtype=torch.int32),
                       state=model.init_state(1))),
    ]


def test_argument_errors(tiny_config):
    model = make_model(tiny_config)
    for name, kwargs in bad_calls(tiny_config, model):
        with pytest.raises(ValueError, match=name):
            model(**kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(0)
    with pytest.raises(ValueError, match="state_energy"):
        model.update_state_energy_ema(torch.zeros(tiny_config.n_heads))
    with pytest.raises(ValueError, match="config"):
        CDSSMForCausalLM(dataclasses.asdict(tiny_config))
