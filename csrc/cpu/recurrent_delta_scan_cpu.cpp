// CPU kernels of the literal delta recurrence (the test oracle and the decode step), general P:
//   e = s_{t−1} − β_t (s_{t−1}·k_t) k_t,   s_t = z_t e + β_t v^c_t k_t,   y_t = s_t·q_t
// The backward re-runs the recurrence from checkpoints every kSegment steps and walks each
// segment in reverse (memory O(T/kSegment + kSegment) states per (sequence, head)).
#include "delta_scan_cpu.h"

namespace cdssm {
namespace {

constexpr int64_t kSegment = 64;

template <typename acc_t>
struct Step {
  const acc_t *k, *q;
  acc_t beta;
  Cx<acc_t> z, vc;
};

// s ← z (s − β (s·k) k) + β v^c k for one pair's row s (D); returns s·k before the update.
template <typename acc_t>
Cx<acc_t> advance(Cx<acc_t>* s, const Step<acc_t>& st, int64_t D) {
  Cx<acc_t> sk;
  for (int64_t d = 0; d < D; ++d) sk += s[d] * st.k[d];
  const Cx<acc_t> write = st.vc * st.beta;
  for (int64_t d = 0; d < D; ++d)
    s[d] = st.z * (s[d] - sk * (st.beta * st.k[d])) + write * st.k[d];
  return sk;
}

// The inputs of token t, head h, pair p in the accumulation type (k, q copied into kbuf, qbuf).
template <typename scalar_t, typename acc_t>
struct Tokens {
  const scalar_t *q, *k, *v, *b;
  const acc_t *ld, *ph;
  ScanIndex ix;
  void load(int64_t bi, int64_t t, int64_t h, acc_t* kbuf, acc_t* qbuf) const {
    const int64_t o = ix.qk(bi, t, h);
    for (int64_t d = 0; d < ix.D; ++d) {
      kbuf[d] = static_cast<acc_t>(k[o + d]);
      qbuf[d] = static_cast<acc_t>(q[o + d]);
    }
  }
  Step<acc_t> step(int64_t bi, int64_t t, int64_t h, int64_t p, const acc_t* kbuf,
                   const acc_t* qbuf) const {
    const int64_t pi = ix.pair(bi, t, h) + p;
    return {kbuf, qbuf, static_cast<acc_t>(b[ix.bh(bi, t, h)]), cexp(Cx<acc_t>(ld[pi], ph[pi])),
            Cx<acc_t>(static_cast<acc_t>(v[2 * pi]), static_cast<acc_t>(v[2 * pi + 1]))};
  }
};

template <typename acc_t>
void load_rows(std::vector<Cx<acc_t>>& s, const acc_t* src, int64_t P, int64_t D) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t d = 0; d < D; ++d)
      s[p * D + d] = src ? Cx<acc_t>(src[2 * p * D + d], src[(2 * p + 1) * D + d]) : Cx<acc_t>();
}

template <typename acc_t>
void store_rows(acc_t* dst, const std::vector<Cx<acc_t>>& s, int64_t P, int64_t D) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t d = 0; d < D; ++d) {
      dst[2 * p * D + d] = s[p * D + d].re;
      dst[(2 * p + 1) * D + d] = s[p * D + d].im;
    }
}

template <typename scalar_t>
Tokens<scalar_t, at::opmath_type<scalar_t>> tokens(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& beta,
                                                   const at::Tensor& log_decay,
                                                   const at::Tensor& phase) {
  using acc_t = at::opmath_type<scalar_t>;
  return {q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          beta.data_ptr<scalar_t>(), log_decay.data_ptr<acc_t>(), phase.data_ptr<acc_t>(),
          ScanIndex{q.size(1), q.size(2), q.size(3), v.size(3)}};
}

template <typename scalar_t>
void forward_impl(const Tokens<scalar_t, at::opmath_type<scalar_t>>& in,
                  const std::optional<at::Tensor>& initial_state, const std::vector<Span>& spans,
                  at::Tensor& o, at::Tensor& final_state) {
  using acc_t = at::opmath_type<scalar_t>;
  const ScanIndex& ix = in.ix;
  const int64_t H = ix.H, D = ix.D, P = ix.P;
  const acc_t* init = initial_state.has_value() ? initial_state->data_ptr<acc_t>() : nullptr;
  scalar_t* op = o.data_ptr<scalar_t>();
  acc_t* fp = final_state.data_ptr<acc_t>();
  at::parallel_for(0, static_cast<int64_t>(spans.size()) * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<Cx<acc_t>> s(P * D);
    std::vector<acc_t> kb(D), qb(D);
    for (int64_t item = begin; item < end; ++item) {
      const Span& sp = spans[item / H];
      const int64_t h = item % H;
      load_rows(s, init ? init + ix.state(sp.n, h) : nullptr, P, D);
      for (int64_t t = sp.start; t < sp.start + sp.len; ++t) {
        in.load(sp.b, t, h, kb.data(), qb.data());
        for (int64_t p = 0; p < P; ++p) {
          advance(&s[p * D], in.step(sp.b, t, h, p, kb.data(), qb.data()), D);
          Cx<acc_t> y;
          for (int64_t d = 0; d < D; ++d) y += s[p * D + d] * qb[d];
          scalar_t* ot = op + 2 * (ix.pair(sp.b, t, h) + p);
          ot[0] = static_cast<scalar_t>(y.re);
          ot[1] = static_cast<scalar_t>(y.im);
        }
      }
      store_rows(fp + ix.state(sp.n, h), s, P, D);
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_final,
                   const Tokens<scalar_t, at::opmath_type<scalar_t>>& in,
                   const std::optional<at::Tensor>& initial_state, const std::vector<Span>& spans,
                   at::Tensor& dq, at::Tensor& dk, at::Tensor& dv, at::Tensor& dbeta,
                   at::Tensor& dld, at::Tensor& dph, at::Tensor& dinit) {
  using acc_t = at::opmath_type<scalar_t>;
  using cx = Cx<acc_t>;
  const ScanIndex& ix = in.ix;
  const int64_t H = ix.H, D = ix.D, P = ix.P;
  const acc_t* init = initial_state.has_value() ? initial_state->data_ptr<acc_t>() : nullptr;
  const acc_t* gfp = grad_final.has_value() ? grad_final->data_ptr<acc_t>() : nullptr;
  const scalar_t* gop = grad_o.data_ptr<scalar_t>();
  scalar_t *dqp = dq.data_ptr<scalar_t>(), *dkp = dk.data_ptr<scalar_t>(),
           *dvp = dv.data_ptr<scalar_t>(), *dbp = dbeta.data_ptr<scalar_t>();
  acc_t *dldp = dld.data_ptr<acc_t>(), *dphp = dph.data_ptr<acc_t>(), *dip = dinit.data_ptr<acc_t>();

  at::parallel_for(0, static_cast<int64_t>(spans.size()) * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<cx> s(P * D), ds(P * D), checkpoints, states((kSegment + 1) * P * D), e(D);
    std::vector<acc_t> kb(D), qb(D), dkb(D), dqb(D);
    for (int64_t item = begin; item < end; ++item) {
      const Span& sp = spans[item / H];
      const int64_t h = item % H;
      const int64_t n_seg = (sp.len + kSegment - 1) / kSegment;
      // Forward once, keeping the state at every segment start.
      load_rows(s, init ? init + ix.state(sp.n, h) : nullptr, P, D);
      checkpoints.resize(std::max<int64_t>(n_seg, 1) * P * D);
      for (int64_t seg = 0; seg < n_seg; ++seg) {
        std::copy(s.begin(), s.end(), checkpoints.begin() + seg * P * D);
        const int64_t t1 = sp.start + std::min(sp.len, (seg + 1) * kSegment);
        for (int64_t t = sp.start + seg * kSegment; t < t1; ++t) {
          in.load(sp.b, t, h, kb.data(), qb.data());
          for (int64_t p = 0; p < P; ++p)
            advance(&s[p * D], in.step(sp.b, t, h, p, kb.data(), qb.data()), D);
        }
      }
      load_rows(ds, gfp ? gfp + ix.state(sp.n, h) : nullptr, P, D);
      for (int64_t seg = n_seg - 1; seg >= 0; --seg) {
        const int64_t t0 = sp.start + seg * kSegment;
        const int64_t n = std::min(sp.len - seg * kSegment, kSegment);
        // states[i] = state before token t0 + i (i = 0..n).
        std::copy(checkpoints.begin() + seg * P * D, checkpoints.begin() + (seg + 1) * P * D,
                  states.begin());
        for (int64_t i = 0; i < n; ++i) {
          std::copy(states.begin() + i * P * D, states.begin() + (i + 1) * P * D,
                    states.begin() + (i + 1) * P * D);
          in.load(sp.b, t0 + i, h, kb.data(), qb.data());
          for (int64_t p = 0; p < P; ++p)
            advance(&states[(i + 1) * P * D + p * D], in.step(sp.b, t0 + i, h, p, kb.data(), qb.data()), D);
        }
        for (int64_t i = n - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          in.load(sp.b, t, h, kb.data(), qb.data());
          std::fill(dkb.begin(), dkb.end(), acc_t(0));
          std::fill(dqb.begin(), dqb.end(), acc_t(0));
          acc_t dbeta_t = 0;
          for (int64_t p = 0; p < P; ++p) {
            const Step<acc_t> st = in.step(sp.b, t, h, p, kb.data(), qb.data());
            const cx* sp_prev = &states[i * P * D + p * D];
            const cx* s_new = &states[(i + 1) * P * D + p * D];
            cx* dsp = &ds[p * D];
            const int64_t pi = ix.pair(sp.b, t, h) + p;
            const cx dy(static_cast<acc_t>(gop[2 * pi]), static_cast<acc_t>(gop[2 * pi + 1]));
            // y = s·q
            for (int64_t d = 0; d < D; ++d) {
              dsp[d] += dy * qb[d];
              dqb[d] += re_conj_mul(s_new[d], dy);
            }
            // s = z e + β v^c k,  e = s_prev − β (s_prev·k) k
            cx sk, dz, dsk_w;  // s_prev·k, dz, ds·k
            for (int64_t d = 0; d < D; ++d) sk += sp_prev[d] * kb[d];
            for (int64_t d = 0; d < D; ++d) {
              e[d] = sp_prev[d] - sk * (st.beta * kb[d]);
              dz += dsp[d] * e[d].conj();
              dsk_w += dsp[d] * kb[d];
            }
            const cx dvc = dsk_w * st.beta;
            dvp[2 * pi] = static_cast<scalar_t>(dvc.re);
            dvp[2 * pi + 1] = static_cast<scalar_t>(dvc.im);
            dbeta_t += re_conj_mul(st.vc, dsk_w);
            const cx bv = st.vc * st.beta;
            cx de_k;  // de·k with de = conj(z) ds
            for (int64_t d = 0; d < D; ++d) {
              const cx de = st.z.conj() * dsp[d];
              dkb[d] += re_conj_mul(bv, dsp[d]) - st.beta * re_conj_mul(sk, de);
              de_k += de * kb[d];
              dsp[d] = de;
            }
            dbeta_t -= re_conj_mul(sk, de_k);
            const cx dsk = de_k * (-st.beta);
            for (int64_t d = 0; d < D; ++d) {
              dsp[d] += dsk * kb[d];
              dkb[d] += re_conj_mul(sp_prev[d], dsk);
            }
            const cx dg = st.z.conj() * dz;
            dldp[pi] = dg.re;
            dphp[pi] = dg.im;
          }
          const int64_t o = ix.qk(sp.b, t, h);
          for (int64_t d = 0; d < D; ++d) {
            dqp[o + d] = static_cast<scalar_t>(dqb[d]);
            dkp[o + d] = static_cast<scalar_t>(dkb[d]);
          }
          dbp[ix.bh(sp.b, t, h)] = static_cast<scalar_t>(dbeta_t);
        }
      }
      store_rows(dip + ix.state(sp.n, h), ds, P, D);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> recurrent_delta_scan_fwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    const at::Tensor& log_decay, const at::Tensor& phase,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  check_scan_inputs(q, k, v, beta, log_decay, phase, cu_seqlens);
  check_state(initial_state, "initial_state", q, v, log_decay, cu_seqlens);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const auto spans = make_spans(B, T, cu_seqlens, 0);
  const int64_t N = static_cast<int64_t>(spans.size());
  at::Tensor o = at::empty({B, T, H, P, 2}, q.options());
  at::Tensor final_state = at::empty({N, H, 2 * P, D}, log_decay.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "recurrent_delta_scan_fwd", [&] {
    forward_impl<scalar_t>(tokens<scalar_t>(q, k, v, beta, log_decay, phase), initial_state, spans,
                           o, final_state);
  });
  return {o, final_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
recurrent_delta_scan_bwd_cpu(const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_final_state,
                             const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& beta, const at::Tensor& log_decay,
                             const at::Tensor& phase, const std::optional<at::Tensor>& initial_state,
                             const std::optional<at::Tensor>& cu_seqlens) {
  check_scan_inputs(q, k, v, beta, log_decay, phase, cu_seqlens);
  check_state(initial_state, "initial_state", q, v, log_decay, cu_seqlens);
  check_state(grad_final_state, "grad_final_state", q, v, log_decay, cu_seqlens);
  check_grad_o(grad_o, q, v);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const auto spans = make_spans(B, T, cu_seqlens, 0);
  const int64_t N = static_cast<int64_t>(spans.size());
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor dbeta = at::empty_like(beta), dld = at::empty_like(log_decay),
             dph = at::empty_like(phase);
  at::Tensor dinit = at::empty({N, H, 2 * P, D}, log_decay.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "recurrent_delta_scan_bwd", [&] {
    backward_impl<scalar_t>(grad_o, grad_final_state, tokens<scalar_t>(q, k, v, beta, log_decay, phase),
                            initial_state, spans, dq, dk, dv, dbeta, dld, dph, dinit);
  });
  return {dq, dk, dv, dbeta, dld, dph, dinit};
}

}  // namespace

TORCH_LIBRARY_IMPL(cdssm, CPU, m) {
  m.impl("recurrent_delta_scan_fwd", &recurrent_delta_scan_fwd_cpu);
  m.impl("recurrent_delta_scan_bwd", &recurrent_delta_scan_bwd_cpu);
}

}  // namespace cdssm
