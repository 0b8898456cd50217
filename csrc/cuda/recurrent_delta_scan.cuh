// CUDA kernels of the literal delta recurrence (recurrent_delta_scan_{fwd,bwd}; the CPU kernel
// csrc/cpu/recurrent_delta_scan_cpu.cpp), general P; free of torch headers.
//
// Per (sequence, head, pair p), complex state row s ∈ C^D, token t:
//   sk = s_{t−1}·k_t,   s_t = z_t (s_{t−1} − β_t sk k_t) + β_t v^c_t k_t,   y_t = s_t·q_t,
//   z_t = e^{log_decay + i·phase}.
// One block per (sequence, head); warp w runs pairs p = w, w + nwarps, ..; lane l holds the state
// entries d = l + 32 r (r < kR), in registers, so both dot products are warp shuffles and the
// forward needs no shared memory and no workspace (the decode step: one token, CUDA-graph safe).
//
// Backward (gradients dx = ∂L/∂Re x + i·∂L/∂Im x, as the CPU kernel), per token in reverse with
// ds the gradient of s_t (after adding dy_t q_t):
//   dz = Σ ds·conj(e),  e = s_{t−1} − β sk k   = Σ ds·conj(s_{t−1}) − β conj(sk) (ds·k),
//   dv^c = β (ds·k),   de = conj(z) ds,   de·k = conj(z)(ds·k),   dsk = −β (de·k),
//   dβ = Re(conj(v^c)(ds·k)) − Re(conj(sk)(de·k)),
//   dk = Re(conj(β v^c) ds) − β Re(conj(sk) de) + Re(conj(s_{t−1}) dsk),   dq = Re(conj(s_t) dy),
//   ds_{t−1} = de + dsk k,   d log_decay + i·d phase = conj(z) dz;
// one warp reduction of (sk, ds·k, Σ ds·conj(s_{t−1})) per token. The states are recomputed per
// segment of S tokens from checkpoints (a workspace written by a forward pass) into shared
// memory; dq, dk, dβ of each pair go to shared memory and are summed over pairs in pair order
// after each segment (deterministic).
#pragma once

#include "device_common.cuh"

namespace cdssm {
namespace recurrent {

using dev::Cx;
using dev::to_acc;

template <typename scalar_t, typename acc_t>
struct ScanArgs {
  const scalar_t *q, *k, *v, *beta;
  const acc_t *log_decay, *phase, *initial;  // initial: (N, H, 2P, D) or nullptr (zeros)
  const int32_t* cu;                         // (N + 1) offsets, or nullptr: N = B rows
  int64_t T;
  int H, D, P;
};

// Flattened token range [tok0, tok1) of sequence n (rows of T tokens).
struct Tokens {
  int64_t tok0, tok1;
};
template <typename scalar_t, typename acc_t>
__device__ inline Tokens tokens_of(const ScanArgs<scalar_t, acc_t>& a, int64_t n) {
  const dev::SeqRange r = dev::seq_range(a.cu, n, a.T);
  const int64_t base = a.cu == nullptr ? n * a.T : 0;
  return {base + r.start, base + r.end};
}

template <typename T>
__device__ inline Cx<T> warp_sum(Cx<T> x) {
  for (int o = 16; o > 0; o /= 2) {
    x.re += __shfl_xor_sync(0xffffffffu, x.re, o);
    x.im += __shfl_xor_sync(0xffffffffu, x.im, o);
  }
  return x;
}

// One token's inputs for one pair; k, q at the lane's entries (0 beyond D).
template <typename acc_t, int kR>
struct Token {
  acc_t k[kR], q[kR], beta;
  Cx<acc_t> z, vc;

  template <typename scalar_t>
  __device__ void load(const ScanArgs<scalar_t, acc_t>& a, int64_t tok, int h, int p, int lane) {
    const int64_t o = (tok * a.H + h) * a.D, pi = (tok * a.H + h) * a.P + p;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int d = lane + 32 * r;
      k[r] = d < a.D ? to_acc(a.k[o + d]) : acc_t(0);
      q[r] = d < a.D ? to_acc(a.q[o + d]) : acc_t(0);
    }
    beta = to_acc(a.beta[tok * a.H + h]);
    z = dev::cexp(Cx<acc_t>(a.log_decay[pi], a.phase[pi]));
    vc = Cx<acc_t>(to_acc(a.v[2 * pi]), to_acc(a.v[2 * pi + 1]));
  }

  // s ← z (s − β (s·k) k) + β v^c k; returns s·k before the update.
  __device__ Cx<acc_t> advance(Cx<acc_t> (&s)[kR]) const {
    Cx<acc_t> sk;
#pragma unroll
    for (int r = 0; r < kR; ++r) sk += s[r] * k[r];
    sk = warp_sum(sk);
    const Cx<acc_t> write = vc * beta;
#pragma unroll
    for (int r = 0; r < kR; ++r) s[r] = z * (s[r] - sk * (beta * k[r])) + write * k[r];
    return sk;
  }
};

// State rows 2p (re), 2p + 1 (im) of a (.., 2P, D) slice <-> the lane's entries.
template <typename acc_t, int kR>
__device__ inline void load_state(Cx<acc_t> (&s)[kR], const acc_t* src, int p, int D, int lane) {
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int d = lane + 32 * r;
    s[r] = (src != nullptr && d < D) ? Cx<acc_t>(src[2 * p * D + d], src[(2 * p + 1) * D + d]) : Cx<acc_t>();
  }
}
template <typename acc_t, int kR>
__device__ inline void store_state(acc_t* dst, const Cx<acc_t> (&s)[kR], int p, int D, int lane) {
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int d = lane + 32 * r;
    if (d < D) {
      dst[2 * p * D + d] = s[r].re;
      dst[(2 * p + 1) * D + d] = s[r].im;
    }
  }
}

// o, final state; grid (N, H), block 32 · nwarps.
template <typename scalar_t, typename acc_t, int kR>
__global__ void recurrent_fwd_kernel(ScanArgs<scalar_t, acc_t> a, scalar_t* o, acc_t* final_state) {
  const int64_t n = blockIdx.x;
  const int h = blockIdx.y, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  const Tokens tk = tokens_of(a, n);
  const int64_t state = (n * a.H + h) * 2 * a.P * a.D;
  for (int p = threadIdx.x / 32; p < a.P; p += nwarps) {
    Cx<acc_t> s[kR];
    load_state(s, a.initial != nullptr ? a.initial + state : nullptr, p, a.D, lane);
    for (int64_t tok = tk.tok0; tok < tk.tok1; ++tok) {
      Token<acc_t, kR> in;
      in.load(a, tok, h, p, lane);
      in.advance(s);
      Cx<acc_t> y;
#pragma unroll
      for (int r = 0; r < kR; ++r) y += s[r] * in.q[r];
      y = warp_sum(y);
      if (lane == 0) {
        const int64_t pi = (tok * a.H + h) * a.P + p;
        o[2 * pi] = dev::from_acc<scalar_t>(y.re);
        o[2 * pi + 1] = dev::from_acc<scalar_t>(y.im);
      }
    }
    store_state(final_state + state, s, p, a.D, lane);
  }
}

template <typename scalar_t, typename acc_t>
struct ScanGrads {
  const scalar_t* grad_o;
  const acc_t* grad_final;  // or nullptr
  scalar_t *dq, *dk, *dv, *dbeta;
  acc_t *dlog_decay, *dphase, *dinitial;
  Cx<acc_t>* checkpoints;  // (rows, H, P, D): sequence n's segments from row seg_row(n)
};

// First checkpoint row of sequence n: n · ceil(T / S) for batch rows, else ⌊cu[n] / S⌋ + n
// (disjoint: ⌊a/S⌋ + ⌈(b − a)/S⌉ ≤ ⌊b/S⌋ + 1 for a ≤ b), so (⌊T/S⌋ + N + 1) rows suffice.
template <typename scalar_t, typename acc_t>
__device__ inline int64_t seg_row(const ScanArgs<scalar_t, acc_t>& a, int64_t n, int64_t tok0, int S) {
  return a.cu == nullptr ? n * ((a.T + S - 1) / S) : tok0 / S + n;
}

// Shared memory of the backward block: ds carry (P, D), states (nwarps, S + 1, D), and the
// per-pair dq, dk (P, S, D) and dβ (P, S) of the current segment.
template <typename acc_t>
struct BwdSmem {
  Cx<acc_t> *carry, *states;
  acc_t *dq, *dk, *db;
  __host__ __device__ static int64_t bytes(int P, int D, int S, int nwarps) {
    return sizeof(Cx<acc_t>) * (static_cast<int64_t>(P) * D + static_cast<int64_t>(nwarps) * (S + 1) * D) +
           sizeof(acc_t) * static_cast<int64_t>(P) * S * (2 * D + 1);
  }
  __device__ BwdSmem(void* base, int P, int D, int S, int nwarps) {
    carry = static_cast<Cx<acc_t>*>(base);
    states = carry + P * D;
    dq = reinterpret_cast<acc_t*>(states + nwarps * (S + 1) * D);
    dk = dq + P * S * D;
    db = dk + P * S * D;
  }
};

// All gradients; grid (N, H), block 32 · nwarps, BwdSmem::bytes of dynamic shared memory.
template <typename scalar_t, typename acc_t, int kR>
__global__ void recurrent_bwd_kernel(ScanArgs<scalar_t, acc_t> a, ScanGrads<scalar_t, acc_t> g, int S) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  using cx = Cx<acc_t>;
  const int64_t n = blockIdx.x;
  const int h = blockIdx.y, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  const int D = a.D, P = a.P;
  const BwdSmem<acc_t> sm(smem_raw, P, D, S, nwarps);
  const Tokens tk = tokens_of(a, n);
  const int64_t len = tk.tok1 - tk.tok0, n_seg = (len + S - 1) / S, row0 = seg_row(a, n, tk.tok0, S);
  const int64_t state = (n * a.H + h) * 2 * P * D;
  auto ckpt = [&](int64_t seg, int p) { return g.checkpoints + ((row0 + seg) * a.H + h) * P * D + p * D; };

  // Forward once: the state at every segment start; ds carry = the final state's gradient.
  for (int p = warp; p < P; p += nwarps) {
    cx s[kR], ds[kR];
    load_state(s, a.initial != nullptr ? a.initial + state : nullptr, p, D, lane);
    load_state(ds, g.grad_final != nullptr ? g.grad_final + state : nullptr, p, D, lane);
    for (int64_t seg = 0; seg < n_seg; ++seg) {
#pragma unroll
      for (int r = 0; r < kR; ++r)
        if (lane + 32 * r < D) ckpt(seg, p)[lane + 32 * r] = s[r];
      for (int64_t tok = tk.tok0 + seg * S; tok < min(tk.tok1, tk.tok0 + (seg + 1) * S); ++tok) {
        Token<acc_t, kR> in;
        in.load(a, tok, h, p, lane);
        in.advance(s);
      }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r)
      if (lane + 32 * r < D) sm.carry[p * D + lane + 32 * r] = ds[r];
  }

  for (int64_t seg = n_seg - 1; seg >= 0; --seg) {
    const int64_t t0 = tk.tok0 + seg * S;
    const int m = static_cast<int>(min(static_cast<int64_t>(S), tk.tok1 - t0));
    cx* states = sm.states + warp * (S + 1) * D;  // states[i] = state before token t0 + i
    for (int p = warp; p < P; p += nwarps) {
      cx s[kR], ds[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int d = lane + 32 * r;
        s[r] = d < D ? ckpt(seg, p)[d] : cx();
        ds[r] = d < D ? sm.carry[p * D + d] : cx();
        if (d < D) states[d] = s[r];
      }
      for (int i = 0; i < m; ++i) {
        Token<acc_t, kR> in;
        in.load(a, t0 + i, h, p, lane);
        in.advance(s);
#pragma unroll
        for (int r = 0; r < kR; ++r)
          if (lane + 32 * r < D) states[(i + 1) * D + lane + 32 * r] = s[r];
      }
      for (int i = m - 1; i >= 0; --i) {
        const int64_t tok = t0 + i, pi = (tok * a.H + h) * P + p;
        Token<acc_t, kR> in;
        in.load(a, tok, h, p, lane);
        const cx dy(to_acc(g.grad_o[2 * pi]), to_acc(g.grad_o[2 * pi + 1]));
        cx prev[kR], sk, dsk_w, ds_prev;  // ds_prev = Σ ds·conj(s_{t−1})
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          const int d = lane + 32 * r;
          const cx s_new = d < D ? states[(i + 1) * D + d] : cx();
          prev[r] = d < D ? states[i * D + d] : cx();
          ds[r] += dy * in.q[r];
          if (d < D) sm.dq[(p * S + i) * D + d] = dev::re_conj_mul(s_new, dy);
          sk += prev[r] * in.k[r];
          dsk_w += ds[r] * in.k[r];
          ds_prev += ds[r] * prev[r].conj();
        }
        sk = warp_sum(sk);
        dsk_w = warp_sum(dsk_w);
        ds_prev = warp_sum(ds_prev);
        const cx dz = ds_prev - sk.conj() * dsk_w * in.beta;
        const cx bv = in.vc * in.beta, de_k = in.z.conj() * dsk_w, dsk = de_k * (-in.beta);
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          const int d = lane + 32 * r;
          const cx de = in.z.conj() * ds[r];
          if (d < D)
            sm.dk[(p * S + i) * D + d] = dev::re_conj_mul(bv, ds[r]) -
                                         in.beta * dev::re_conj_mul(sk, de) +
                                         dev::re_conj_mul(prev[r], dsk);
          ds[r] = de + dsk * in.k[r];
        }
        if (lane == 0) {
          const cx dvc = dsk_w * in.beta, dg = in.z.conj() * dz;
          g.dv[2 * pi] = dev::from_acc<scalar_t>(dvc.re);
          g.dv[2 * pi + 1] = dev::from_acc<scalar_t>(dvc.im);
          sm.db[p * S + i] = dev::re_conj_mul(in.vc, dsk_w) - dev::re_conj_mul(sk, de_k);
          g.dlog_decay[pi] = dg.re;
          g.dphase[pi] = dg.im;
        }
      }
#pragma unroll
      for (int r = 0; r < kR; ++r)
        if (lane + 32 * r < D) sm.carry[p * D + lane + 32 * r] = ds[r];
    }
    __syncthreads();
    // dq, dk, dβ of the segment: sums over the pairs in pair order.
    for (int j = threadIdx.x; j < m * (D + 1); j += blockDim.x) {
      const int i = j / (D + 1), d = j % (D + 1);
      const int64_t tok = t0 + i;
      if (d == D) {
        acc_t b = 0;
        for (int p = 0; p < P; ++p) b += sm.db[p * S + i];
        g.dbeta[tok * a.H + h] = dev::from_acc<scalar_t>(b);
        continue;
      }
      acc_t dq = 0, dk = 0;
      for (int p = 0; p < P; ++p) {
        dq += sm.dq[(p * S + i) * D + d];
        dk += sm.dk[(p * S + i) * D + d];
      }
      g.dq[(tok * a.H + h) * D + d] = dev::from_acc<scalar_t>(dq);
      g.dk[(tok * a.H + h) * D + d] = dev::from_acc<scalar_t>(dk);
    }
    __syncthreads();
  }
  __syncthreads();  // the carry of every pair (also with no segment)
  for (int j = threadIdx.x; j < P * D; j += blockDim.x) {
    const int p = j / D, d = j % D;
    g.dinitial[state + 2 * p * D + d] = sm.carry[j].re;
    g.dinitial[state + (2 * p + 1) * D + d] = sm.carry[j].im;
  }
}

}  // namespace recurrent
}  // namespace cdssm
