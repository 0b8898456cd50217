// The decay of one chunk (spec/scan.md § Exact chunk algorithm): E_tj = e^{G_t − G_j} for t ≥ j,
// G = cumsum(log_decay + i·phase), and its factorisation over sub-blocks of kSub tokens, which
// turns the chunk kernels' decayed sums into real × complex sums with no exponential per element.
//
// With a(t) = ⌊t / S⌋ (S = kSub), for t in sub-block a and j in sub-block b < a:
//   E_tj = A_t F_ab B_j,   A_t = e^{G_t − G_{aS−1}},   F_ab = e^{G_{aS−1} − G_{bS+S−1}},
//   B_j = e^{G_{e(b)} − G_j},   e(b) = min(bS + S − 1, m − 1),   G_{−1} = 0 (so A_t = Γ_t in a = 0).
// Each factor is e^{G_x − G_y} with x ≥ y, so its modulus is ≤ 1 and ≥ |E_tj|: none overflows,
// and one underflows only where E_tj does (never form e^{−G}). Pairs inside one sub-block keep
// E element-wise (the band: row t holds E_tj for aS ≤ j ≤ t). Then
//   Σ_{j<t} X_tj E_tj x_j = A_t Σ_{b<a} F_ab Σ_{j∈b} X_tj (B_j x_j) + Σ_{aS≤j<t} X_tj E_tj x_j,
//   Σ_{t>j} conj(X_tj E_tj) x_t = conj(B_j) Σ_{a>b} conj(F_ab) Σ_{t∈a} X_tj (conj(A_t) x_t)
//                                 + Σ_{j<t<bS+S} conj(X_tj E_tj) x_t
// for a real lower-triangular X (T_real, QKᵀ): 2C + C·S exponentials per chunk and pair instead
// of C(C + 1)/2.
#pragma once

#include <cstdint>

#include "device_common.cuh"

namespace cdssm {
namespace cuda {

using dev::Cx;
using dev::cexp;

__device__ inline float wrap_phase(float x) {
  return x - 6.283185307179586f * rintf(x * 0.15915494309189535f);
}
__device__ inline double wrap_phase(double x) {
  return x - 6.283185307179586 * rint(x * 0.15915494309189535);
}

// E_tj = e^{G_t − G_j} for t ≥ j (callers never ask for t < j); G's phases wrapped to (−π, π],
// so the fast sincos sees |arg| < 2π.
template <typename T>
__device__ inline Cx<T> edecay(const Cx<T>* G, int t, int j) {
  return cexp(Cx<T>(G[t].re - G[j].re, wrap_phase(G[t].im - G[j].im)));
}

constexpr int kSub = 16, kBand = kSub + 1;  // band rows padded: a column walk hits distinct banks

// The factors of one pair's E in C·(2 + kBand) + ⌈C/S⌉² complex words at base: A, B (C), F
// (⌈C/S⌉ × ⌈C/S⌉, F[a·nbC + b] for b < a), band (C × kBand, row t at t·kBand, column j − aS).
template <typename acc_t>
struct DecayBlocks {
  using cx = Cx<acc_t>;
  cx *A, *B, *F, *band;
  int nbC;
  __host__ __device__ static int64_t words(int C) {
    const int64_t nb = (C + kSub - 1) / kSub;
    return int64_t(C) * (2 + kBand) + nb * nb;
  }
  __host__ __device__ DecayBlocks(cx* base, int C) : nbC((C + kSub - 1) / kSub) {
    A = base;
    B = A + C;
    band = B + C;
    F = band + int64_t(C) * kBand;
  }

  // From the cumulated G of the pair, for a chunk of m tokens: the band and F (all threads call
  // it) and A_t, B_t (fill_token, for one t); the caller's barrier follows.
  __device__ void fill_blocks(const cx* G, int m) const {
    for (int i = threadIdx.x; i < m * kSub; i += blockDim.x) {
      const int t = i / kSub, j = t / kSub * kSub + i % kSub;
      if (j <= t) band[t * kBand + i % kSub] = edecay(G, t, j);
    }
    const int nb = (m + kSub - 1) / kSub;
    for (int i = threadIdx.x; i < nb * nb; i += blockDim.x) {
      const int a = i / nb, b = i % nb;
      if (b < a) F[a * nbC + b] = edecay(G, a * kSub - 1, b * kSub + kSub - 1);
    }
  }
  // gam: Γ = e^G of the pair.
  __device__ void fill_token(const cx* G, const cx* gam, int t, int m) const {
    const int s = t / kSub * kSub;
    A[t] = s == 0 ? gam[t] : edecay(G, t, s - 1);
    B[t] = edecay(G, min(s + kSub, m) - 1, t);
  }

  // E_tj, t ≥ j.
  __device__ cx E(int t, int j) const {
    const int a = t / kSub, b = j / kSub;
    return a == b ? band[t * kBand + j - a * kSub] : A[t] * F[a * nbC + b] * B[j];
  }

  // Lane `lane` of kLanes's share (terms j ≡ lane mod kLanes) of Σ_{j<t} X(t, j) E_tj x_j, with
  // xb_j = B_j x_j.
  template <int kLanes, typename FX>
  __device__ cx forward_part(int t, int lane, FX X, const cx* xb, const cx* x) const {
    static_assert(kSub % kLanes == 0, "a lane's terms of a sub-block");
    const int a = t / kSub;
    cx off;
    for (int b = 0; b < a; ++b) {
      cx acc;
#pragma unroll
      for (int i = 0; i < kSub / kLanes; ++i) {
        const int j = b * kSub + lane + i * kLanes;
        acc += xb[j] * X(t, j);
      }
      off += F[a * nbC + b] * acc;
    }
    cx in;
    for (int j = a * kSub + lane; j < t; j += kLanes) in += band[t * kBand + j - a * kSub] * x[j] * X(t, j);
    return A[t] * off + in;
  }

  // Lane `lane` of kLanes's share (terms t ≡ j + 1 + lane mod kLanes in the band, t ≡ lane
  // beyond it) of Σ_{j<t<m} conj(X(t, j) E_tj) x_t, with xa_t = conj(A_t) x_t.
  template <int kLanes, typename FX>
  __device__ cx adjoint_part(int j, int lane, int m, FX X, const cx* xa, const cx* x) const {
    static_assert(kSub % kLanes == 0, "a lane's terms of a sub-block");
    const int b = j / kSub, nb = (m + kSub - 1) / kSub;
    cx off;
    for (int a = b + 1; a < nb; ++a) {
      cx acc;
#pragma unroll
      for (int i = 0; i < kSub / kLanes; ++i) {
        const int t = a * kSub + lane + i * kLanes;
        if (t < m) acc += xa[t] * X(t, j);
      }
      off += F[a * nbC + b].conj() * acc;
    }
    cx in;
    const int end = min(b * kSub + kSub, m);
    for (int t = j + 1 + lane; t < end; t += kLanes) in += band[t * kBand + j - b * kSub].conj() * x[t] * X(t, j);
    return B[j].conj() * off + in;
  }
};

}  // namespace cuda
}  // namespace cdssm
