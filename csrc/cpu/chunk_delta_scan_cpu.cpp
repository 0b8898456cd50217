// CPU kernels of the exact chunked delta scan (spec/scan.md § Exact chunk algorithm), general P.
//
// Per (sequence, head), chunk by chunk (n tokens, incoming state s0 ∈ C^{P×D}):
//   T_real = (I + strict_lower(diag(β) K Kᵀ))⁻¹            shared by the P pairs
//   W      = T_real diag(β) K                               shared by the P pairs
//   per pair:  E_tj = Π_{j<l≤t} z_l = e^{G_t − G_j} (t ≥ j),  Γ_t = e^{G_t}
//              u = (T_real ⊙ E)(β ⊙ v^c) − Γ ⊙ (W s0ᵀ)
//              y_t = Γ_t (q_t·s0) + Σ_{j≤t} E_tj (q_t·k_j) u_j
//              s_end = Γ_{n−1} s0 + Σ_j E_{n−1,j} u_j k_j
// E and Γ are running products of z = e^{log_decay + i·phase}: every factor has modulus ≤ 1, so
// nothing overflows and no exponential of a difference of long sums loses precision.
// The backward recomputes each chunk from its stored start state and walks the chunks in
// reverse, carrying dS (gradients in the convention dx = ∂L/∂Re x + i·∂L/∂Im x).
#include "delta_scan_cpu.h"

namespace cdssm {
namespace {

// One chunk of one (sequence, head), loaded in the accumulation type.
template <typename acc_t>
struct Chunk {
  int64_t m = 0, D, P;
  std::vector<acc_t> K, Q, beta;  // (m, D), (m, D), (m)
  std::vector<acc_t> KK, QK, T;   // (m, m): k_t·k_j (j < t), q_t·k_j (j ≤ t), T_real
  std::vector<Cx<acc_t>> z, vc;   // (m, P): transitions and complex values

  Chunk(int64_t C, int64_t D_, int64_t P_)
      : D(D_), P(P_), K(C * D_), Q(C * D_), beta(C), KK(C * C), QK(C * C), T(C * C), z(C * P_),
        vc(C * P_) {}

  template <typename scalar_t>
  void load(const scalar_t* q, const scalar_t* k, const scalar_t* v, const scalar_t* b,
            const acc_t* ld, const acc_t* ph, const ScanIndex& ix, int64_t bi, int64_t t0,
            int64_t n, int64_t h) {
    m = n;
    for (int64_t t = 0; t < m; ++t) {
      const scalar_t* qt = q + ix.qk(bi, t0 + t, h);
      const scalar_t* kt = k + ix.qk(bi, t0 + t, h);
      for (int64_t d = 0; d < D; ++d) {
        Q[t * D + d] = static_cast<acc_t>(qt[d]);
        K[t * D + d] = static_cast<acc_t>(kt[d]);
      }
      beta[t] = static_cast<acc_t>(b[ix.bh(bi, t0 + t, h)]);
      const int64_t pi = ix.pair(bi, t0 + t, h);
      for (int64_t p = 0; p < P; ++p) {
        z[t * P + p] = cexp(Cx<acc_t>(ld[pi + p], ph[pi + p]));
        vc[t * P + p] = Cx<acc_t>(static_cast<acc_t>(v[2 * (pi + p)]),
                                  static_cast<acc_t>(v[2 * (pi + p) + 1]));
      }
    }
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t j = 0; j <= t; ++j) {
        acc_t kk = 0, qk = 0;
#pragma omp simd reduction(+ : kk, qk)
        for (int64_t d = 0; d < D; ++d) {
          kk += K[t * D + d] * K[j * D + d];
          qk += Q[t * D + d] * K[j * D + d];
        }
        KK[t * m + j] = kk;
        QK[t * m + j] = qk;
      }
    }
    // Forward substitution: T_tj = −Σ_{j≤l<t} β_t KK_tl T_lj, T_tt = 1.
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t j = 0; j < t; ++j) {
        acc_t acc = 0;
        for (int64_t l = j; l < t; ++l) acc += KK[t * m + l] * T[l * m + j];
        T[t * m + j] = -beta[t] * acc;
      }
      T[t * m + t] = 1;
    }
  }

  // E (m, m) lower triangle and Γ (m) of pair p as running products of z.
  void decays(int64_t p, std::vector<Cx<acc_t>>& E, std::vector<Cx<acc_t>>& gamma) const {
    Cx<acc_t> g(1, 0);
    for (int64_t t = 0; t < m; ++t) {
      const Cx<acc_t> zt = z[t * P + p];
      for (int64_t j = 0; j < t; ++j) E[t * m + j] = E[(t - 1) * m + j] * zt;
      E[t * m + t] = Cx<acc_t>(1, 0);
      g = g * zt;
      gamma[t] = g;
    }
  }

  // Complex dot of real row x (D) with complex s (D).
  static Cx<acc_t> dot(const acc_t* x, const Cx<acc_t>* s, int64_t D) {
    acc_t re = 0, im = 0;
#pragma omp simd reduction(+ : re, im)
    for (int64_t d = 0; d < D; ++d) {
      re += s[d].re * x[d];
      im += s[d].im * x[d];
    }
    return {re, im};
  }

  // b_t = β_t v^c_t − β_t Γ_t (k_t·s0) and u = (T_real ⊙ E) b for pair p.
  void pseudo_values(int64_t p, const Cx<acc_t>* s0, const std::vector<Cx<acc_t>>& E,
                     const std::vector<Cx<acc_t>>& gamma, std::vector<Cx<acc_t>>& ks,
                     std::vector<Cx<acc_t>>& b, std::vector<Cx<acc_t>>& u) const {
    for (int64_t t = 0; t < m; ++t) {
      ks[t] = dot(&K[t * D], s0, D);
      b[t] = (vc[t * P + p] - gamma[t] * ks[t]) * beta[t];
    }
    for (int64_t t = 0; t < m; ++t) {
      Cx<acc_t> acc;
      for (int64_t j = 0; j <= t; ++j) acc += E[t * m + j] * b[j] * T[t * m + j];
      u[t] = acc;
    }
  }
};

template <typename acc_t>
struct PairWork {
  std::vector<Cx<acc_t>> E, gamma, ks, b, u, qs;
  explicit PairWork(int64_t C) : E(C * C), gamma(C), ks(C), b(C), u(C), qs(C) {}
};

template <typename acc_t>
void store_state(acc_t* dst, const std::vector<Cx<acc_t>>& s, int64_t P, int64_t D) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t d = 0; d < D; ++d) {
      dst[(2 * p) * D + d] = s[p * D + d].re;
      dst[(2 * p + 1) * D + d] = s[p * D + d].im;
    }
}

template <typename acc_t>
void load_state(std::vector<Cx<acc_t>>& s, const acc_t* src, int64_t P, int64_t D) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t d = 0; d < D; ++d)
      s[p * D + d] = src ? Cx<acc_t>(src[(2 * p) * D + d], src[(2 * p + 1) * D + d]) : Cx<acc_t>();
}

template <typename scalar_t>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& beta, const at::Tensor& log_decay, const at::Tensor& phase,
                  const std::optional<at::Tensor>& initial_state, const std::vector<Span>& spans,
                  int64_t C, at::Tensor& o, at::Tensor& final_state, at::Tensor& boundary,
                  at::Tensor& energy) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const ScanIndex ix{T, H, D, P};
  const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>(),
                 *vp = v.data_ptr<scalar_t>(), *bp = beta.data_ptr<scalar_t>();
  const acc_t *ldp = log_decay.data_ptr<acc_t>(), *php = phase.data_ptr<acc_t>();
  const acc_t* init = initial_state.has_value() ? initial_state->data_ptr<acc_t>() : nullptr;
  scalar_t* op = o.data_ptr<scalar_t>();
  acc_t *fp = final_state.data_ptr<acc_t>(), *bdp = boundary.data_ptr<acc_t>(),
        *ep = energy.data_ptr<acc_t>();
  const bool varlen = boundary.dim() == 4;

  at::parallel_for(0, static_cast<int64_t>(spans.size()) * H, 1, [&](int64_t begin, int64_t end) {
    Chunk<acc_t> ch(C, D, P);
    PairWork<acc_t> w(C);
    std::vector<Cx<acc_t>> s(P * D), r(C), ws(C);
    std::vector<acc_t> W(C * D);
    for (int64_t item = begin; item < end; ++item) {
      const Span& sp = spans[item / H];
      const int64_t h = item % H;
      load_state(s, init ? init + ix.state(sp.n, h) : nullptr, P, D);
      acc_t energy_sum = 0;
      int64_t n_chunks = 0;
      for (int64_t c0 = 0; c0 < sp.len; c0 += C, ++n_chunks) {
        const int64_t m = std::min(C, sp.len - c0), t0 = sp.start + c0;
        store_state(bdp + ix.state(sp.chunk_row + n_chunks, h), s, P, D);
        ch.load(qp, kp, vp, bp, ldp, php, ix, sp.b, t0, m, h);
        // W = T_real diag(β) K: the decay-free part of the state correction, shared by pairs.
        std::fill(W.begin(), W.begin() + m * D, acc_t(0));
        for (int64_t t = 0; t < m; ++t)
          for (int64_t j = 0; j <= t; ++j) {
            const acc_t coef = ch.T[t * m + j] * ch.beta[j];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) W[t * D + d] += coef * ch.K[j * D + d];
          }
        for (int64_t p = 0; p < P; ++p) {
          Cx<acc_t>* s0 = &s[p * D];
          ch.decays(p, w.E, w.gamma);
          for (int64_t t = 0; t < m; ++t) {
            Cx<acc_t> acc;
            for (int64_t j = 0; j <= t; ++j)
              acc += w.E[t * m + j] * ch.vc[j * P + p] * (ch.T[t * m + j] * ch.beta[j]);
            w.u[t] = acc - w.gamma[t] * Chunk<acc_t>::dot(&W[t * D], s0, D);
            w.qs[t] = Chunk<acc_t>::dot(&ch.Q[t * D], s0, D);
          }
          for (int64_t t = 0; t < m; ++t) {
            Cx<acc_t> y = w.gamma[t] * w.qs[t];
            for (int64_t j = 0; j <= t; ++j) y += w.E[t * m + j] * w.u[j] * ch.QK[t * m + j];
            scalar_t* ot = op + 2 * (ix.pair(sp.b, t0 + t, h) + p);
            ot[0] = static_cast<scalar_t>(y.re);
            ot[1] = static_cast<scalar_t>(y.im);
          }
          const Cx<acc_t> g_end = w.gamma[m - 1];
          for (int64_t d = 0; d < D; ++d) s0[d] = g_end * s0[d];
          for (int64_t j = 0; j < m; ++j) {
            const Cx<acc_t> c = w.E[(m - 1) * m + j] * w.u[j];
            const acc_t* kj = &ch.K[j * D];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) {
              s0[d].re += c.re * kj[d];
              s0[d].im += c.im * kj[d];
            }
          }
        }
        for (const auto& x : s) energy_sum += x.norm2();
      }
      if (n_chunks == 0)
        for (const auto& x : s) energy_sum += x.norm2();
      ep[sp.n * H + h] = energy_sum / static_cast<acc_t>(std::max<int64_t>(n_chunks, 1));
      store_state(fp + ix.state(sp.n, h), s, P, D);
      if (!varlen) store_state(bdp + ix.state(sp.chunk_row + n_chunks, h), s, P, D);
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_final,
                   const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& beta, const at::Tensor& log_decay, const at::Tensor& phase,
                   const at::Tensor& boundary, const std::vector<Span>& spans, int64_t C,
                   at::Tensor& dq, at::Tensor& dk, at::Tensor& dv, at::Tensor& dbeta,
                   at::Tensor& dld, at::Tensor& dph, at::Tensor& dinit) {
  using acc_t = at::opmath_type<scalar_t>;
  using cx = Cx<acc_t>;
  const int64_t T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const ScanIndex ix{T, H, D, P};
  const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>(),
                 *vp = v.data_ptr<scalar_t>(), *bp = beta.data_ptr<scalar_t>(),
                 *gop = grad_o.data_ptr<scalar_t>();
  const acc_t *ldp = log_decay.data_ptr<acc_t>(), *php = phase.data_ptr<acc_t>(),
              *bdp = boundary.data_ptr<acc_t>();
  const acc_t* gfp = grad_final.has_value() ? grad_final->data_ptr<acc_t>() : nullptr;
  scalar_t *dqp = dq.data_ptr<scalar_t>(), *dkp = dk.data_ptr<scalar_t>(),
           *dvp = dv.data_ptr<scalar_t>(), *dbp = dbeta.data_ptr<scalar_t>();
  acc_t *dldp = dld.data_ptr<acc_t>(), *dphp = dph.data_ptr<acc_t>(),
        *dip = dinit.data_ptr<acc_t>();

  at::parallel_for(0, static_cast<int64_t>(spans.size()) * H, 1, [&](int64_t begin, int64_t end) {
    Chunk<acc_t> ch(C, D, P);
    PairWork<acc_t> w(C);
    std::vector<cx> ds(P * D), s(P * D), ds0(D), dE(C * C), dG(C), dgam(C), du(C), db(C), dy(C);
    std::vector<acc_t> dT(C * C), dQK(C * C), dA(C * C), X(C * C), dQ(C * D), dK(C * D), dB(C);
    for (int64_t item = begin; item < end; ++item) {
      const Span& sp = spans[item / H];
      const int64_t h = item % H;
      load_state(ds, gfp ? gfp + ix.state(sp.n, h) : nullptr, P, D);
      const int64_t n_chunks = (sp.len + C - 1) / C;
      for (int64_t ci = n_chunks - 1; ci >= 0; --ci) {
        const int64_t c0 = ci * C, m = std::min(C, sp.len - c0), t0 = sp.start + c0;
        load_state(s, bdp + ix.state(sp.chunk_row + ci, h), P, D);
        ch.load(qp, kp, vp, bp, ldp, php, ix, sp.b, t0, m, h);
        std::fill(dT.begin(), dT.begin() + m * m, acc_t(0));
        std::fill(dQK.begin(), dQK.begin() + m * m, acc_t(0));
        std::fill(dQ.begin(), dQ.begin() + m * D, acc_t(0));
        std::fill(dK.begin(), dK.begin() + m * D, acc_t(0));
        std::fill(dB.begin(), dB.begin() + m, acc_t(0));
        for (int64_t p = 0; p < P; ++p) {
          const cx* s0 = &s[p * D];
          cx* dsp = &ds[p * D];
          ch.decays(p, w.E, w.gamma);
          ch.pseudo_values(p, s0, w.E, w.gamma, w.ks, w.b, w.u);
          std::fill(dE.begin(), dE.begin() + m * m, cx());
          std::fill(dgam.begin(), dgam.begin() + m, cx());
          std::fill(du.begin(), du.begin() + m, cx());
          std::fill(db.begin(), db.begin() + m, cx());
          for (int64_t t = 0; t < m; ++t) {
            const scalar_t* g = gop + 2 * (ix.pair(sp.b, t0 + t, h) + p);
            dy[t] = cx(static_cast<acc_t>(g[0]), static_cast<acc_t>(g[1]));
          }
          // s_end = Γ_{m−1} s0 + Σ_j c_j k_j,  c_j = E_{m−1,j} u_j.
          for (int64_t d = 0; d < D; ++d) {
            ds0[d] = w.gamma[m - 1].conj() * dsp[d];
            dgam[m - 1] += dsp[d] * s0[d].conj();
          }
          for (int64_t j = 0; j < m; ++j) {
            const cx c = w.E[(m - 1) * m + j] * w.u[j];
            cx dc;
            for (int64_t d = 0; d < D; ++d) {
              dc += dsp[d] * ch.K[j * D + d];
              dK[j * D + d] += re_conj_mul(c, dsp[d]);
            }
            dE[(m - 1) * m + j] += dc * w.u[j].conj();
            du[j] += dc * w.E[(m - 1) * m + j].conj();
          }
          // y_t = Γ_t (q_t·s0) + Σ_{j≤t} QK_tj E_tj u_j.
          for (int64_t t = 0; t < m; ++t) {
            const cx qs = Chunk<acc_t>::dot(&ch.Q[t * D], s0, D);
            dgam[t] += dy[t] * qs.conj();
            const cx a = dy[t] * w.gamma[t].conj();
            for (int64_t d = 0; d < D; ++d) {
              ds0[d] += a * ch.Q[t * D + d];
              dQ[t * D + d] += re_conj_mul(s0[d], a);
            }
            for (int64_t j = 0; j <= t; ++j) {
              const cx e = w.E[t * m + j];
              const cx dM = dy[t] * w.u[j].conj();
              du[j] += (e * ch.QK[t * m + j]).conj() * dy[t];
              dQK[t * m + j] += re_conj_mul(e, dM);
              dE[t * m + j] += dM * ch.QK[t * m + j];
            }
          }
          // u = (T_real ⊙ E) b.
          for (int64_t t = 0; t < m; ++t)
            for (int64_t j = 0; j <= t; ++j) {
              const cx e = w.E[t * m + j];
              const acc_t tr = ch.T[t * m + j];
              db[j] += (e * tr).conj() * du[t];
              const cx dTt = du[t] * w.b[j].conj();
              if (j < t) dT[t * m + j] += re_conj_mul(e, dTt);
              dE[t * m + j] += dTt * tr;
            }
          // b_t = β_t v^c_t − β_t Γ_t (k_t·s0).
          for (int64_t t = 0; t < m; ++t) {
            const acc_t bt = ch.beta[t];
            const cx dvc = db[t] * bt;
            scalar_t* dvt = dvp + 2 * (ix.pair(sp.b, t0 + t, h) + p);
            dvt[0] = static_cast<scalar_t>(dvc.re);
            dvt[1] = static_cast<scalar_t>(dvc.im);
            dB[t] += re_conj_mul(ch.vc[t * P + p] - w.gamma[t] * w.ks[t], db[t]);
            dgam[t] -= w.ks[t].conj() * db[t] * bt;
            const cx dks = w.gamma[t].conj() * db[t] * (-bt);
            for (int64_t d = 0; d < D; ++d) {
              ds0[d] += dks * ch.K[t * D + d];
              dK[t * D + d] += re_conj_mul(s0[d], dks);
            }
          }
          // E_tj = e^{G_t − G_j}, Γ_t = e^{G_t}; g = reverse cumsum of dG.
          std::fill(dG.begin(), dG.begin() + m, cx());
          for (int64_t t = 0; t < m; ++t) {
            dG[t] += w.gamma[t].conj() * dgam[t];
            for (int64_t j = 0; j < t; ++j) {
              const cx hx = w.E[t * m + j].conj() * dE[t * m + j];
              dG[t] += hx;
              dG[j] -= hx;
            }
          }
          cx acc;
          for (int64_t t = m - 1; t >= 0; --t) {
            acc += dG[t];
            const int64_t pi = ix.pair(sp.b, t0 + t, h) + p;
            dldp[pi] = acc.re;
            dphp[pi] = acc.im;
          }
          std::copy(ds0.begin(), ds0.end(), dsp);
        }
        // T_real = (I + A)⁻¹, A_tj = β_t KK_tj (t > j): dA = −T_realᵀ dT T_realᵀ.
        for (int64_t l = 0; l < m; ++l)  // X = dT T_realᵀ, X_lj = Σ_i dT_li T_ji
          for (int64_t j = 0; j < m; ++j) {
            acc_t x = 0;
            const int64_t top = std::min(l, j);
#pragma omp simd reduction(+ : x)
            for (int64_t i = 0; i <= top; ++i) x += dT[l * m + i] * ch.T[j * m + i];
            X[l * m + j] = x;
          }
        for (int64_t t = 0; t < m; ++t)
          for (int64_t j = 0; j < t; ++j) {
            acc_t a = 0;
            for (int64_t l = t; l < m; ++l) a += ch.T[l * m + t] * X[l * m + j];
            dA[t * m + j] = -a;
            dB[t] += dA[t * m + j] * ch.KK[t * m + j];
          }
        for (int64_t t = 0; t < m; ++t)
          for (int64_t j = 0; j <= t; ++j) {
            const acc_t dkk = j < t ? ch.beta[t] * dA[t * m + j] : acc_t(0);
            const acc_t dqk = dQK[t * m + j];
            for (int64_t d = 0; d < D; ++d) {
              dK[t * D + d] += dkk * ch.K[j * D + d];
              dK[j * D + d] += dkk * ch.K[t * D + d] + dqk * ch.Q[t * D + d];
              dQ[t * D + d] += dqk * ch.K[j * D + d];
            }
          }
        for (int64_t t = 0; t < m; ++t) {
          const int64_t o = ix.qk(sp.b, t0 + t, h);
          for (int64_t d = 0; d < D; ++d) {
            dqp[o + d] = static_cast<scalar_t>(dQ[t * D + d]);
            dkp[o + d] = static_cast<scalar_t>(dK[t * D + d]);
          }
          dbp[ix.bh(sp.b, t0 + t, h)] = static_cast<scalar_t>(dB[t]);
        }
      }
      store_state(dip + ix.state(sp.n, h), ds, P, D);
    }
  });
}

int64_t checked_chunk_size(int64_t chunk_size) {
  TORCH_CHECK(chunk_size >= 1 && chunk_size <= 1024, "chunk_size: expected 1..1024, got ",
              chunk_size);
  return chunk_size;
}

// The rows the scan runs on: q̂ = q / √(Σ q² + eps) with l2_norm_eps, else q; contiguous.
at::Tensor scan_rows(const at::Tensor& x, std::optional<double> l2_norm_eps) {
  return l2_norm_eps.has_value() ? l2_normalize_rows(x, *l2_norm_eps) : x.contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chunk_delta_scan_fwd_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v, const at::Tensor& beta,
    const at::Tensor& log_decay, const at::Tensor& phase,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens,
    int64_t chunk_size, std::optional<double> l2_norm_eps) {
  check_scan_inputs(q_in, k_in, v, beta, log_decay, phase, cu_seqlens, /*token_rows_qk=*/true);
  check_state(initial_state, "initial_state", q_in, v, log_decay, cu_seqlens);
  check_l2_norm_eps(l2_norm_eps);
  const at::Tensor q = scan_rows(q_in, l2_norm_eps), k = scan_rows(k_in, l2_norm_eps);
  const int64_t C = checked_chunk_size(chunk_size);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const auto spans = make_spans(B, T, cu_seqlens, C);
  const int64_t N = static_cast<int64_t>(spans.size());
  const auto sopt = q.options().dtype(log_decay.scalar_type());
  at::Tensor o = at::empty({B, T, H, P, 2}, q.options());
  at::Tensor final_state = at::empty({N, H, 2 * P, D}, sopt);
  at::Tensor boundary = empty_boundary_states(q, v, cu_seqlens, C, sopt);
  at::Tensor energy = at::empty({N, H}, sopt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "chunk_delta_scan_fwd", [&] {
    forward_impl<scalar_t>(q, k, v, beta, log_decay, phase, initial_state, spans, C, o,
                           final_state, boundary, energy);
  });
  return {o, final_state, boundary, energy};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
chunk_delta_scan_bwd_cpu(const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_final_state,
                         const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v,
                         const at::Tensor& beta, const at::Tensor& log_decay,
                         const at::Tensor& phase, const at::Tensor& boundary_states,
                         const std::optional<at::Tensor>& cu_seqlens, int64_t chunk_size,
                         std::optional<double> l2_norm_eps) {
  check_scan_inputs(q_in, k_in, v, beta, log_decay, phase, cu_seqlens, /*token_rows_qk=*/true);
  check_state(grad_final_state, "grad_final_state", q_in, v, log_decay, cu_seqlens);
  check_l2_norm_eps(l2_norm_eps);
  const at::Tensor q = scan_rows(q_in, l2_norm_eps), k = scan_rows(k_in, l2_norm_eps);
  const int64_t C = checked_chunk_size(chunk_size);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  check_grad_o(grad_o, q, v);
  check_boundary_states(boundary_states, q, v, log_decay, cu_seqlens, C);
  const auto spans = make_spans(B, T, cu_seqlens, C);
  const int64_t N = static_cast<int64_t>(spans.size());
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor dbeta = at::empty_like(beta), dld = at::empty_like(log_decay),
             dph = at::empty_like(phase);
  at::Tensor dinit = at::empty({N, H, 2 * P, D}, log_decay.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "chunk_delta_scan_bwd", [&] {
    backward_impl<scalar_t>(grad_o, grad_final_state, q, k, v, beta, log_decay, phase,
                            boundary_states, spans, C, dq, dk, dv, dbeta, dld, dph, dinit);
  });
  if (l2_norm_eps.has_value()) {  // from the normalised rows' gradients to the raw rows'
    dq = l2_normalize_rows_backward(q_in, dq, *l2_norm_eps);
    dk = l2_normalize_rows_backward(k_in, dk, *l2_norm_eps);
  }
  return {dq, dk, dv, dbeta, dld, dph, dinit};
}

}  // namespace

TORCH_LIBRARY_IMPL(cdssm, CPU, m) {
  m.impl("chunk_delta_scan_fwd", &chunk_delta_scan_fwd_cpu);
  m.impl("chunk_delta_scan_bwd", &chunk_delta_scan_bwd_cpu);
}

}  // namespace cdssm
