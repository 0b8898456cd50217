// CUDA kernels of the exact chunked delta scan (spec/scan.md § Exact chunk algorithm and
// § Implementation notes), general P; free of torch headers so that it compiles alone.
//
// Per (sequence, head), chunk of n tokens, incoming state s0 ∈ C^{P×D}, pair p:
//   T_real = (I + strict_lower(diag(β) K Kᵀ))⁻¹,   W = T_real diag(β) K      (shared by the pairs)
//   E_tj = e^{G_t − G_j} (t ≥ j),  Γ_t = e^{G_t},  G = cumsum(log_decay + i·phase)
//   u = u_loc − Γ ⊙ (W s0ᵀ),   u_loc = (T_real ⊙ E)(β ⊙ v^c)
//   y_t = Γ_t (q_t·s0) + Σ_{j≤t} E_tj (q_t·k_j) u_j
//   s_end = Γ_{n−1} s0 + Σ_j E_{n−1,j} u_j k_j = Γ_{n−1} ⊙ (M s0) + c,
//   M = I − Kᵀ W (real, D × D, shared by the pairs),  c = Kᵀ(E_{n−1,:} ⊙ u_loc)
// (E_{n−1,j} Γ_j = Γ_{n−1}), so the sequential part is one D × D matrix per chunk.
//
// Forward: (1) chunk_prepare, parallel over (chunk, head): W, u_loc, M, c, Γ_{n−1};
// (2) state_chain, sequential over the chunks of one (sequence, head): boundary states;
// (3) chunk_output, parallel: u from the boundary state, y.
// Backward (gradients dx = ∂L/∂Re x + i·∂L/∂Im x, as the CPU kernel): the chunk-start gradient is
//   ds0 = conj(Γ_{n−1}) ⊙ (Mᵀ ds) + ds_loc,
//   ds_loc = Qᵀ(conj(Γ) ⊙ dy) − Kᵀ(β ⊙ conj(Γ) ⊙ db_loc),  db_loc = (T_real ⊙ E)ᴴ du_loc,
//   du_loc = (QKᵀ ⊙ E)ᴴ dy,
// so (1) bwd_local, parallel: Mᵀ, ds_loc, Γ_{n−1}; (2) state_chain in reverse: ds at every chunk
// end; (3) chunk_bwd, parallel: the CPU kernel's per-chunk backward from s0 and ds.
//
// Phases of G are kept wrapped to (−π, π] so that the fast sincos of E sees |arg| < 2π.
// Shared-memory tiles of D columns have row stride D + 1 and tiles of C columns C + 1 (no bank
// conflicts when a warp walks down a column).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <cstdint>

namespace cdssm {
namespace cuda {

constexpr int kThreads = 256;

template <typename T>
struct Cx {
  T re, im;
  __host__ __device__ Cx() : re(0), im(0) {}
  __host__ __device__ Cx(T r, T i) : re(r), im(i) {}
  __device__ Cx operator+(Cx o) const { return {re + o.re, im + o.im}; }
  __device__ Cx operator-(Cx o) const { return {re - o.re, im - o.im}; }
  __device__ Cx operator*(Cx o) const { return {re * o.re - im * o.im, re * o.im + im * o.re}; }
  __device__ Cx operator*(T s) const { return {re * s, im * s}; }
  __device__ Cx& operator+=(Cx o) { re += o.re; im += o.im; return *this; }
  __device__ Cx& operator-=(Cx o) { re -= o.re; im -= o.im; return *this; }
  __device__ Cx conj() const { return {re, -im}; }
  __device__ T norm2() const { return re * re + im * im; }
};

// Re(conj(a) * b)
template <typename T>
__device__ inline T re_conj_mul(Cx<T> a, Cx<T> b) { return a.re * b.re + a.im * b.im; }

__device__ inline float wrap_phase(float x) {
  return x - 6.283185307179586f * rintf(x * 0.15915494309189535f);
}
__device__ inline double wrap_phase(double x) {
  return x - 6.283185307179586 * rint(x * 0.15915494309189535);
}
__device__ inline Cx<float> cexp(Cx<float> g) {
  float s, c;
  sincosf(g.im, &s, &c);
  const float m = expf(g.re);
  return {m * c, m * s};
}
__device__ inline Cx<double> cexp(Cx<double> g) {
  double s, c;
  sincos(g.im, &s, &c);
  const double m = exp(g.re);
  return {m * c, m * s};
}
__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// E_tj = e^{G_t − G_j} for t ≥ j (callers never ask for t < j).
template <typename T>
__device__ inline Cx<T> edecay(const Cx<T>* G, int t, int j) {
  return cexp(Cx<T>(G[t].re - G[j].re, wrap_phase(G[t].im - G[j].im)));
}

template <typename T>
__device__ inline T to_acc(T x) { return x; }
__device__ inline float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_acc(__half x) { return __half2float(x); }

template <typename scalar_t, typename acc_t>
__device__ inline scalar_t from_acc(acc_t x) { return static_cast<scalar_t>(x); }
template <>
__device__ inline __nv_bfloat16 from_acc<__nv_bfloat16, float>(float x) { return __float2bfloat16(x); }
template <>
__device__ inline __half from_acc<__half, float>(float x) { return __float2half(x); }

// Bump allocation of a kernel's scratch (shared memory, or global memory when it does not fit);
// with base 0 it only measures.
struct Carve {
  uintptr_t at;
  template <typename T>
  __host__ __device__ T* take(int64_t n) {
    T* p = reinterpret_cast<T*>(at);
    at += (static_cast<uintptr_t>(n) * sizeof(T) + 15) & ~uintptr_t(15);
    return p;
  }
};

// Sequences: token offset base[n] = b·T + start (flattened (B, T)), length len[n], and the
// boundary row of their first chunk chunk_row[n] (chunk_row[N] = rows in use).
struct Sequences {
  const int64_t *base, *len, *chunk_row;
  int64_t N;
};

// The inputs in canonical layout (csrc/ops.cpp) and the sizes.
template <typename scalar_t, typename acc_t>
struct Inputs {
  const scalar_t *q, *k, *v, *beta;
  const acc_t *log_decay, *phase;
  int H, D, P, C;
  __host__ __device__ int64_t qk(int64_t tok, int h) const { return (tok * H + h) * D; }
};

// One chunk of one head: boundary row, first token (flattened), length m, owning sequence n.
struct ChunkPos {
  int64_t row, tok0, n;
  int m;
};

// The chunk of boundary row blockIdx.x (m = 0 for rows that hold no chunk start).
__device__ inline ChunkPos locate_chunk(const Sequences& seq, int C) {
  const int64_t row = blockIdx.x;
  ChunkPos c{row, 0, 0, 0};
  if (row >= seq.chunk_row[seq.N]) return c;
  int64_t lo = 0, hi = seq.N - 1;  // largest n with chunk_row[n] <= row
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (seq.chunk_row[mid] <= row) lo = mid; else hi = mid - 1;
  }
  const int64_t c0 = (row - seq.chunk_row[lo]) * C;
  c.n = lo;
  c.tok0 = seq.base[lo] + c0;
  const int64_t left = seq.len[lo] - c0;  // ≤ 0 on a batch row's final-state row
  c.m = left > 0 ? static_cast<int>(min64(C, left)) : 0;
  return c;
}

__device__ inline void* block_scratch(void* global_scratch, int64_t bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  if (global_scratch == nullptr) return smem;
  const int64_t block = blockIdx.x + static_cast<int64_t>(gridDim.x) * blockIdx.y;
  return static_cast<unsigned char*>(global_scratch) + block * bytes;
}

// ---------------------------------------------------------------------------------------------
// Block-wide building blocks (all threads call them; each ends without a barrier).

// dst[t·(D+1) + d] = src row (tok0 + t, h), t < m.
template <typename scalar_t, typename acc_t>
__device__ void load_rows(acc_t* dst, const scalar_t* src, const Inputs<scalar_t, acc_t>& in,
                          int64_t tok0, int m, int h) {
  for (int i = threadIdx.x; i < m * in.D; i += blockDim.x) {
    const int t = i / in.D, d = i % in.D;
    dst[t * (in.D + 1) + d] = to_acc(src[in.qk(tok0 + t, h) + d]);
  }
}

// G[p·C + t] = log_decay + i·phase of token t, pair p (before the cumulative sum).
template <typename scalar_t, typename acc_t>
__device__ void load_decay(Cx<acc_t>* G, const Inputs<scalar_t, acc_t>& in, int64_t tok0, int m,
                           int h) {
  for (int i = threadIdx.x; i < m * in.P; i += blockDim.x) {
    const int t = i / in.P, p = i % in.P;
    const int64_t pi = ((tok0 + t) * in.H + h) * in.P + p;
    G[p * in.C + t] = Cx<acc_t>(in.log_decay[pi], in.phase[pi]);
  }
}

// In place: G_t = Σ_{i≤t} g_i per pair (phase wrapped), and Γ_t = e^{G_t} into gamma (if given).
template <typename acc_t>
__device__ void cumulate_decay(Cx<acc_t>* G, Cx<acc_t>* gamma, int m, int C, int P) {
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    Cx<acc_t> acc;
    for (int t = 0; t < m; ++t) {
      acc = Cx<acc_t>(acc.re + G[p * C + t].re, wrap_phase(acc.im + G[p * C + t].im));
      G[p * C + t] = acc;
      if (gamma) gamma[p * C + t] = cexp(acc);
    }
  }
}

// out[t·(C+1) + j] = a_t·b_j for j ≤ t (j < t when strict), t < m.
template <typename acc_t>
__device__ void lower_gram(acc_t* out, const acc_t* a, const acc_t* b, int m, int C, int D,
                           bool strict) {
  for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
    const int t = i / m, j = i % m;
    if (strict ? j >= t : j > t) continue;
    acc_t acc = 0;
    for (int d = 0; d < D; ++d) acc += a[t * (D + 1) + d] * b[j * (D + 1) + d];
    out[t * (C + 1) + j] = acc;
  }
}

// T_real = (I + strict_lower(diag(β) KK))⁻¹ by forward substitution, one column per thread:
// T_tj = −β_t (KK_tj + Σ_{j<l<t} KK_tl T_lj), T_jj = 1, T_tj = 0 for t < j.
template <typename acc_t>
__device__ void unit_lower_inverse(acc_t* T, const acc_t* KK, const acc_t* beta, int m, int C) {
  const int L = C + 1;  // row stride
  for (int j = threadIdx.x; j < m; j += blockDim.x) {
    for (int l = 0; l < j; ++l) T[l * L + j] = 0;
    T[j * L + j] = 1;
    for (int t = j + 1; t < m; ++t) {
      acc_t acc = KK[t * L + j];
      for (int l = j + 1; l < t; ++l) acc += KK[t * L + l] * T[l * L + j];
      T[t * L + j] = -beta[t] * acc;
    }
  }
}

// W_td = Σ_{j≤t} T_tj β_j K_jd into the tile W, and densely into global Wg (if given).
template <typename acc_t>
__device__ void w_tile(acc_t* W, acc_t* Wg, const acc_t* T, const acc_t* beta, const acc_t* K,
                       int m, int C, int D) {
  for (int i = threadIdx.x; i < m * D; i += blockDim.x) {
    const int t = i / D, d = i % D;
    acc_t acc = 0;
    for (int j = 0; j <= t; ++j) acc += T[t * (C + 1) + j] * beta[j] * K[j * (D + 1) + d];
    W[t * (D + 1) + d] = acc;
    if (Wg) Wg[i] = acc;
  }
}

// M = I − Kᵀ W (D × D, the decay-free part of the chunk's state map), densely into global Mg;
// transposed when `transpose` (the backward pass applies Mᵀ).
template <typename acc_t>
__device__ void state_map(acc_t* Mg, const acc_t* K, const acc_t* W, int m, int D, bool transpose) {
  for (int i = threadIdx.x; i < D * D; i += blockDim.x) {
    const int d = i / D, e = i % D;
    acc_t acc = d == e ? acc_t(1) : acc_t(0);
    for (int t = 0; t < m; ++t) acc -= K[t * (D + 1) + d] * W[t * (D + 1) + e];
    Mg[transpose ? e * D + d : i] = acc;
  }
}

// State rows of one (row, head) in the (.., 2P, D) layout <-> complex s[p·D + d].
template <typename acc_t>
__device__ void load_state(Cx<acc_t>* s, const acc_t* src, int P, int D) {
  for (int i = threadIdx.x; i < P * D; i += blockDim.x) {
    const int p = i / D, d = i % D;
    s[i] = src ? Cx<acc_t>(src[(2 * p) * D + d], src[(2 * p + 1) * D + d]) : Cx<acc_t>();
  }
}
template <typename acc_t>
__device__ void store_state(acc_t* dst, const Cx<acc_t>* s, int P, int D) {
  for (int i = threadIdx.x; i < P * D; i += blockDim.x) {
    const int p = i / D, d = i % D;
    dst[(2 * p) * D + d] = s[i].re;
    dst[(2 * p + 1) * D + d] = s[i].im;
  }
}

template <typename acc_t>
__device__ acc_t block_sum(acc_t x) {
  __shared__ double partial[kThreads / 32];
  for (int o = 16; o > 0; o /= 2) x += __shfl_down_sync(0xffffffffu, x, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
  __syncthreads();
  acc_t total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w) total += static_cast<acc_t>(partial[w]);
  return total;
}

// ---------------------------------------------------------------------------------------------
// Sequence table from cu_seqlens (or from the batch), validated on the device: invalid offsets
// (cu[0] != 0, cu[N] != T, a decrease) leave every sequence empty and *valid = 0, and the
// callers then fill every output with NaN (no host sync).

__global__ void __launch_bounds__(1024) sequence_table_kernel(const int32_t* cu, int64_t N,
                                                              int64_t T, int C, int64_t* base,
                                                              int64_t* len, int64_t* chunk_row,
                                                              int* valid) {
  __shared__ int64_t scan[1024];
  const int64_t n_chunks = (T + C - 1) / C;
  if (cu == nullptr) {
    for (int64_t n = threadIdx.x; n <= N; n += blockDim.x) {
      chunk_row[n] = n * (n_chunks + 1);  // chunk starts, then the final state
      if (n < N) { base[n] = n * T; len[n] = T; }
    }
    if (threadIdx.x == 0) *valid = 1;
    return;
  }
  int ok = 1;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x)
    ok &= (cu[n + 1] >= cu[n]) && (n > 0 || cu[0] == 0) && (n < N - 1 || cu[N] == T);
  ok = __syncthreads_and(ok);
  int64_t carry = 0;
  for (int64_t n0 = 0; n0 < N; n0 += blockDim.x) {
    const int64_t n = n0 + threadIdx.x;
    const int64_t l = (ok && n < N) ? cu[n + 1] - cu[n] : 0;
    scan[threadIdx.x] = (l + C - 1) / C;
    __syncthreads();
    for (int o = 1; o < static_cast<int>(blockDim.x); o *= 2) {  // inclusive Hillis-Steele scan
      const int64_t x = threadIdx.x >= o ? scan[threadIdx.x - o] : 0;
      __syncthreads();
      scan[threadIdx.x] += x;
      __syncthreads();
    }
    if (n < N) {
      base[n] = ok ? cu[n] : 0;
      len[n] = l;
      chunk_row[n] = carry + scan[threadIdx.x] - (l + C - 1) / C;
    }
    carry += scan[blockDim.x - 1];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    chunk_row[N] = carry;
    *valid = ok;
  }
}

template <typename T>
__global__ void fill_nan_if_invalid_kernel(T* x, int64_t numel, const int* valid) {
  if (*valid) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_acc<T>(static_cast<float>(NAN));
}

// ---------------------------------------------------------------------------------------------
// Forward (1): per (chunk, head): W (C, D) and u_loc (C, P) for the output kernel, and the
// chunk's state map s ← Γ_{n−1} ⊙ (M s) + c: M = I − Kᵀ W (D, D), c = Kᵀ(E_{n−1,:} ⊙ u_loc) (P, D),
// Γ_{n−1} (P).

template <typename acc_t>
struct PrepareScratch {
  acc_t *K, *W, *KK, *T, *beta;
  Cx<acc_t> *G, *vb, *eu;
  int64_t bytes;
  __host__ __device__ PrepareScratch(void* base, int C, int D, int P) {
    Carve c{reinterpret_cast<uintptr_t>(base)};
    K = c.take<acc_t>(int64_t(C) * (D + 1));
    W = c.take<acc_t>(int64_t(C) * (D + 1));
    KK = c.take<acc_t>(int64_t(C) * (C + 1));
    T = c.take<acc_t>(int64_t(C) * (C + 1));
    beta = c.take<acc_t>(C);
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    vb = c.take<Cx<acc_t>>(int64_t(C) * P);
    eu = c.take<Cx<acc_t>>(int64_t(C) * P);
    bytes = static_cast<int64_t>(c.at - reinterpret_cast<uintptr_t>(base));
  }
};

// Per-chunk workspace, indexed by (row, head): W (C, D), u_loc (C, P) [forward only]; the state
// map M (D, D) (transposed in the backward), c (P, D), Γ_{n−1} (P).
template <typename acc_t>
struct ChunkWork {
  acc_t *W, *M;
  Cx<acc_t> *ul, *c, *gam_end;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) chunk_prepare_kernel(Inputs<scalar_t, acc_t> in,
                                                                 Sequences seq,
                                                                 ChunkWork<acc_t> ws,
                                                                 void* global_scratch) {
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m;
  PrepareScratch<acc_t> s(block_scratch(global_scratch, PrepareScratch<acc_t>(nullptr, C, D, P).bytes),
                          C, D, P);
  load_rows(s.K, in.k, in, c.tok0, m, h);
  load_decay(s.G, in, c.tok0, m, h);
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int t = i / P;
    const int64_t bh = (c.tok0 + t) * in.H + h;
    const acc_t b = to_acc(in.beta[bh]);
    if (i % P == 0) s.beta[t] = b;
    s.vb[i] = Cx<acc_t>(to_acc(in.v[2 * (bh * P + i % P)]), to_acc(in.v[2 * (bh * P + i % P) + 1])) * b;
  }
  __syncthreads();
  lower_gram(s.KK, s.K, s.K, m, C, D, true);
  cumulate_decay(s.G, static_cast<Cx<acc_t>*>(nullptr), m, C, P);
  __syncthreads();
  unit_lower_inverse(s.T, s.KK, s.beta, m, C);
  __syncthreads();
  const int64_t wrow = c.row * in.H + h;
  w_tile(s.W, ws.W + wrow * C * D, s.T, s.beta, s.K, m, C, D);
  // u_loc_t = Σ_{j≤t} E_tj T_tj β_j v^c_j;  eu_t = E_{n−1,t} u_loc_t.
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int t = i / P, p = i % P;
    const Cx<acc_t>* G = s.G + p * C;
    Cx<acc_t> acc;
    for (int j = 0; j <= t; ++j) acc += edecay(G, t, j) * s.vb[j * P + p] * s.T[t * (C + 1) + j];
    ws.ul[wrow * C * P + i] = acc;
    s.eu[i] = edecay(G, m - 1, t) * acc;
  }
  __syncthreads();
  state_map(ws.M + wrow * D * D, s.K, s.W, m, D, false);
  for (int i = threadIdx.x; i < P * D; i += blockDim.x) {
    const int p = i / D, d = i % D;
    Cx<acc_t> acc;
    for (int t = 0; t < m; ++t) acc += s.eu[t * P + p] * s.K[t * (D + 1) + d];
    ws.c[wrow * P * D + i] = acc;
  }
  for (int p = threadIdx.x; p < P; p += blockDim.x) ws.gam_end[wrow * P + p] = cexp(s.G[p * C + m - 1]);
}

// Forward (2) and backward (2): per (sequence, head), the chain of chunk state maps, in order
// (forward: s ← Γ_{n−1} ⊙ (M s) + c, storing s at every chunk start, then the final state and
// the mean chunk-end ‖S‖²) or in reverse (backward: ds ← conj(Γ_{n−1}) ⊙ (Mᵀ ds) + ds_loc,
// storing ds at every chunk end, then the initial-state gradient). The next chunk's M, c, Γ are
// copied into shared memory asynchronously while the current step runs; four threads share a
// dot product of length D.

template <typename acc_t>
struct ChainScratch {
  Cx<acc_t> *s, *s_next, *c[2], *gam[2];
  acc_t* M[2];
  int64_t bytes;
  __host__ __device__ ChainScratch(void* base, int D, int P) {
    Carve cv{reinterpret_cast<uintptr_t>(base)};
    s = cv.take<Cx<acc_t>>(int64_t(P) * D);
    s_next = cv.take<Cx<acc_t>>(int64_t(P) * D);
    for (int b = 0; b < 2; ++b) {
      M[b] = cv.take<acc_t>(int64_t(D) * (D + 1));
      c[b] = cv.take<Cx<acc_t>>(int64_t(P) * D);
      gam[b] = cv.take<Cx<acc_t>>(P);
    }
    bytes = static_cast<int64_t>(cv.at - reinterpret_cast<uintptr_t>(base));
  }
};

template <typename acc_t>
__device__ void copy_async(acc_t* dst, const acc_t* src) {
  __pipeline_memcpy_async(dst, src, sizeof(acc_t));
}

// Issues the copies of chunk (row, head)'s M, c, Γ_{n−1} into Mb, cb, gb.
template <typename acc_t>
__device__ void prefetch_map(acc_t* Mb, Cx<acc_t>* cb, Cx<acc_t>* gb, const ChunkWork<acc_t>& ws,
                             int64_t wrow, int D, int P) {
  const acc_t* M = ws.M + wrow * D * D;
  for (int i = threadIdx.x; i < D * D; i += blockDim.x) copy_async(&Mb[(i / D) * (D + 1) + i % D], &M[i]);
  const acc_t* c = reinterpret_cast<const acc_t*>(ws.c + wrow * P * D);
  for (int i = threadIdx.x; i < 2 * P * D; i += blockDim.x) copy_async(&reinterpret_cast<acc_t*>(cb)[i], &c[i]);
  const acc_t* g = reinterpret_cast<const acc_t*>(ws.gam_end + wrow * P);
  for (int i = threadIdx.x; i < 2 * P; i += blockDim.x) copy_async(&reinterpret_cast<acc_t*>(gb)[i], &g[i]);
  __pipeline_commit();
}

template <typename acc_t, bool kForward>
__global__ void __launch_bounds__(kThreads) state_chain_kernel(Sequences seq, int H, int D, int P,
                                                               int C, ChunkWork<acc_t> ws,
                                                               const acc_t* state_in,
                                                               acc_t* boundary, Cx<acc_t>* ds_end,
                                                               acc_t* state_out, acc_t* energy,
                                                               void* global_scratch) {
  const int h = blockIdx.y;
  const int64_t n = blockIdx.x, SD = int64_t(2) * P * D;
  ChainScratch<acc_t> sc(block_scratch(global_scratch, ChainScratch<acc_t>(nullptr, D, P).bytes), D, P);
  load_state(sc.s, state_in ? state_in + (n * H + h) * SD : nullptr, P, D);
  const int64_t n_chunks = (seq.len[n] + C - 1) / C;
  const auto wrow_of = [&](int64_t k) {
    return (seq.chunk_row[n] + (kForward ? k : n_chunks - 1 - k)) * H + h;
  };
  if (n_chunks > 0) prefetch_map(sc.M[0], sc.c[0], sc.gam[0], ws, wrow_of(0), D, P);
  acc_t energy_sum = 0;
  const int items = 4 * P * D;
  for (int64_t k = 0; k < n_chunks; ++k) {
    const bool odd = k & 1;
    const acc_t* M = odd ? sc.M[1] : sc.M[0];
    const Cx<acc_t>* cmap = odd ? sc.c[1] : sc.c[0];
    const Cx<acc_t>* gam = odd ? sc.gam[1] : sc.gam[0];
    const int64_t wrow = wrow_of(k);
    if (kForward) store_state(boundary + wrow * SD, sc.s, P, D);
    else for (int x = threadIdx.x; x < P * D; x += blockDim.x) ds_end[wrow * P * D + x] = sc.s[x];
    __pipeline_wait_prior(0);
    __syncthreads();
    if (k + 1 < n_chunks)
      prefetch_map(odd ? sc.M[0] : sc.M[1], odd ? sc.c[0] : sc.c[1], odd ? sc.gam[0] : sc.gam[1], ws,
                   wrow_of(k + 1), D, P);
    for (int x0 = 0; x0 < items; x0 += blockDim.x) {
      const int x = x0 + threadIdx.x, item = x / 4, lane = x % 4;
      Cx<acc_t> acc;
      if (x < items) {
        const int p = item / D, d = item % D;
        for (int e = lane; e < D; e += 4) acc += sc.s[p * D + e] * M[d * (D + 1) + e];
      }
      for (int o = 1; o < 4; o *= 2) {
        acc.re += __shfl_xor_sync(0xffffffffu, acc.re, o);
        acc.im += __shfl_xor_sync(0xffffffffu, acc.im, o);
      }
      if (x < items && lane == 0) {
        const int p = item / D;
        const Cx<acc_t> g = kForward ? gam[p] : gam[p].conj();
        const Cx<acc_t> s_new = g * acc + cmap[item];
        sc.s_next[item] = s_new;
        if (kForward) energy_sum += s_new.norm2();
      }
    }
    __syncthreads();
    for (int x = threadIdx.x; x < P * D; x += blockDim.x) sc.s[x] = sc.s_next[x];
    __syncthreads();
  }
  store_state(state_out + (n * H + h) * SD, sc.s, P, D);
  if (kForward) {
    if (n_chunks == 0)
      for (int x = threadIdx.x; x < P * D; x += blockDim.x) energy_sum += sc.s[x].norm2();
    const acc_t total = block_sum(energy_sum);
    if (threadIdx.x == 0) energy[n * H + h] = total / static_cast<acc_t>(n_chunks > 0 ? n_chunks : 1);
  }
}

// Forward (3): per (chunk, head): u = u_loc − Γ ⊙ (W s0), y_t = Γ_t (q_t·s0) + Σ_{j≤t} E_tj (q_t·k_j) u_j.

template <typename acc_t>
struct OutputScratch {
  acc_t *Q, *K, *W, *QK;
  Cx<acc_t> *G, *u, *s0;
  int64_t bytes;
  __host__ __device__ OutputScratch(void* base, int C, int D, int P) {
    Carve c{reinterpret_cast<uintptr_t>(base)};
    Q = c.take<acc_t>(int64_t(C) * (D + 1));
    K = c.take<acc_t>(int64_t(C) * (D + 1));
    W = c.take<acc_t>(int64_t(C) * (D + 1));
    QK = c.take<acc_t>(int64_t(C) * (C + 1));
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    u = c.take<Cx<acc_t>>(int64_t(C) * P);
    s0 = c.take<Cx<acc_t>>(int64_t(P) * D);
    bytes = static_cast<int64_t>(c.at - reinterpret_cast<uintptr_t>(base));
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) chunk_output_kernel(Inputs<scalar_t, acc_t> in,
                                                                Sequences seq,
                                                                ChunkWork<acc_t> ws,
                                                                const acc_t* boundary,
                                                                scalar_t* o,
                                                                void* global_scratch) {
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m;
  const int64_t wrow = c.row * in.H + h;
  OutputScratch<acc_t> s(block_scratch(global_scratch, OutputScratch<acc_t>(nullptr, C, D, P).bytes),
                         C, D, P);
  load_rows(s.Q, in.q, in, c.tok0, m, h);
  load_rows(s.K, in.k, in, c.tok0, m, h);
  load_decay(s.G, in, c.tok0, m, h);
  load_state(s.s0, boundary + wrow * 2 * P * D, P, D);
  for (int i = threadIdx.x; i < m * D; i += blockDim.x)
    s.W[(i / D) * (D + 1) + i % D] = ws.W[wrow * C * D + i];
  __syncthreads();
  lower_gram(s.QK, s.Q, s.K, m, C, D, false);
  cumulate_decay(s.G, static_cast<Cx<acc_t>*>(nullptr), m, C, P);
  __syncthreads();
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int t = i / P, p = i % P;
    Cx<acc_t> r;
    for (int d = 0; d < D; ++d) r += s.s0[p * D + d] * s.W[t * (D + 1) + d];
    s.u[i] = ws.ul[wrow * C * P + i] - cexp(s.G[p * C + t]) * r;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int t = i / P, p = i % P;
    const Cx<acc_t>* G = s.G + p * C;
    Cx<acc_t> qs;
    for (int d = 0; d < D; ++d) qs += s.s0[p * D + d] * s.Q[t * (D + 1) + d];
    Cx<acc_t> y = cexp(G[t]) * qs;
    for (int j = 0; j <= t; ++j) y += edecay(G, t, j) * s.u[j * P + p] * s.QK[t * (C + 1) + j];
    scalar_t* ot = o + 2 * (((c.tok0 + t) * in.H + h) * P + p);
    ot[0] = from_acc<scalar_t>(y.re);
    ot[1] = from_acc<scalar_t>(y.im);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward (1): per (chunk, head): Mᵀ, ds_loc (P, D) (into ChunkWork::c) and Γ_{n−1} (P).

template <typename acc_t>
struct LocalScratch {
  acc_t *K, *Q, *W, *KK, *QK, *T, *beta;
  Cx<acc_t> *G, *gam, *dy, *du, *db;
  int64_t bytes;
  __host__ __device__ LocalScratch(void* base, int C, int D, int P) {
    Carve c{reinterpret_cast<uintptr_t>(base)};
    K = c.take<acc_t>(int64_t(C) * (D + 1));
    Q = c.take<acc_t>(int64_t(C) * (D + 1));
    W = c.take<acc_t>(int64_t(C) * (D + 1));
    KK = c.take<acc_t>(int64_t(C) * (C + 1));
    QK = c.take<acc_t>(int64_t(C) * (C + 1));
    T = c.take<acc_t>(int64_t(C) * (C + 1));
    beta = c.take<acc_t>(C);
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    gam = c.take<Cx<acc_t>>(int64_t(C) * P);
    dy = c.take<Cx<acc_t>>(int64_t(C) * P);
    du = c.take<Cx<acc_t>>(int64_t(C) * P);
    db = c.take<Cx<acc_t>>(int64_t(C) * P);
    bytes = static_cast<int64_t>(c.at - reinterpret_cast<uintptr_t>(base));
  }
};

// K, Q, β into scratch; KK (strict), QK (inclusive); G cumulated with Γ; T_real. dy (P, C) too.
template <typename scalar_t, typename acc_t>
__device__ void load_backward_chunk(const Inputs<scalar_t, acc_t>& in, const scalar_t* grad_o,
                                    const ChunkPos& c, int h, acc_t* K, acc_t* Q, acc_t* KK,
                                    acc_t* QK, acc_t* T, acc_t* beta, Cx<acc_t>* G,
                                    Cx<acc_t>* gam, Cx<acc_t>* dy) {
  const int C = in.C, D = in.D, P = in.P, m = c.m;
  load_rows(K, in.k, in, c.tok0, m, h);
  load_rows(Q, in.q, in, c.tok0, m, h);
  load_decay(G, in, c.tok0, m, h);
  for (int t = threadIdx.x; t < m; t += blockDim.x) beta[t] = to_acc(in.beta[(c.tok0 + t) * in.H + h]);
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int t = i / P, p = i % P;
    const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
    dy[p * C + t] = Cx<acc_t>(to_acc(grad_o[2 * pi]), to_acc(grad_o[2 * pi + 1]));
  }
  __syncthreads();
  lower_gram(KK, K, K, m, C, D, true);
  lower_gram(QK, Q, K, m, C, D, false);
  cumulate_decay(G, gam, m, C, P);
  __syncthreads();
  unit_lower_inverse(T, KK, beta, m, C);
  __syncthreads();
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) bwd_local_kernel(Inputs<scalar_t, acc_t> in,
                                                             Sequences seq, const scalar_t* grad_o,
                                                             ChunkWork<acc_t> ws,
                                                             void* global_scratch) {
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m, LC = C + 1, LD = D + 1;
  const int64_t wrow = c.row * in.H + h;
  LocalScratch<acc_t> s(block_scratch(global_scratch, LocalScratch<acc_t>(nullptr, C, D, P).bytes),
                        C, D, P);
  load_backward_chunk(in, grad_o, c, h, s.K, s.Q, s.KK, s.QK, s.T, s.beta, s.G, s.gam, s.dy);
  w_tile(s.W, static_cast<acc_t*>(nullptr), s.T, s.beta, s.K, m, C, D);
  // du_loc_j = Σ_{t≥j} conj(E_tj QK_tj) dy_t
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int p = i / m, j = i % m;
    const Cx<acc_t>* G = s.G + p * C;
    Cx<acc_t> acc;
    for (int t = j; t < m; ++t) acc += (edecay(G, t, j) * s.QK[t * LC + j]).conj() * s.dy[p * C + t];
    s.du[p * C + j] = acc;
  }
  __syncthreads();
  state_map(ws.M + wrow * D * D, s.K, s.W, m, D, true);
  // db_loc_j = Σ_{t≥j} conj(E_tj T_tj) du_loc_t
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int p = i / m, j = i % m;
    const Cx<acc_t>* G = s.G + p * C;
    Cx<acc_t> acc;
    for (int t = j; t < m; ++t) acc += (edecay(G, t, j) * s.T[t * LC + j]).conj() * s.du[p * C + t];
    s.db[p * C + j] = acc;
  }
  __syncthreads();
  // ds_loc = Qᵀ(conj(Γ) ⊙ dy) − Kᵀ(β ⊙ conj(Γ) ⊙ db_loc)
  for (int i = threadIdx.x; i < P * D; i += blockDim.x) {
    const int p = i / D, d = i % D;
    Cx<acc_t> acc;
    for (int t = 0; t < m; ++t) {
      const Cx<acc_t> g = s.gam[p * C + t].conj();
      acc += g * (s.dy[p * C + t] * s.Q[t * LD + d] - s.db[p * C + t] * (s.beta[t] * s.K[t * LD + d]));
    }
    ws.c[wrow * P * D + i] = acc;
  }
  for (int p = threadIdx.x; p < P; p += blockDim.x) ws.gam_end[wrow * P + p] = s.gam[p * C + m - 1];
}

// Backward (3): per (chunk, head), the CPU kernel's chunk backward from s0 = boundary[row] and
// ds = ds_end[row]: dq, dk, dv, dβ, d log_decay, d phase of the chunk's tokens.

template <typename acc_t>
struct ChunkBwdScratch {
  acc_t *K, *Q, *KK, *QK, *T, *dT, *dQK, *dQ, *dK, *beta, *dB;
  Cx<acc_t> *G, *gam, *dy, *EH;                      // G, gam, dy: (P, C); EH: (C, C)
  Cx<acc_t> *s0, *ds, *ks, *qs, *dc, *b, *u, *du, *db, *dG;  // s0, ds: (D); the rest (C)
  acc_t* red;                                         // (kThreads / 32) partial sums
  int64_t bytes;
  __host__ __device__ ChunkBwdScratch(void* base, int C, int D, int P) {
    Carve c{reinterpret_cast<uintptr_t>(base)};
    K = c.take<acc_t>(int64_t(C) * (D + 1));
    Q = c.take<acc_t>(int64_t(C) * (D + 1));
    dQ = c.take<acc_t>(int64_t(C) * (D + 1));
    dK = c.take<acc_t>(int64_t(C) * (D + 1));
    KK = c.take<acc_t>(int64_t(C) * (C + 1));
    QK = c.take<acc_t>(int64_t(C) * (C + 1));
    T = c.take<acc_t>(int64_t(C) * (C + 1));
    dT = c.take<acc_t>(int64_t(C) * (C + 1));
    dQK = c.take<acc_t>(int64_t(C) * (C + 1));
    beta = c.take<acc_t>(C);
    dB = c.take<acc_t>(C);
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    gam = c.take<Cx<acc_t>>(int64_t(C) * P);
    dy = c.take<Cx<acc_t>>(int64_t(C) * P);
    EH = c.take<Cx<acc_t>>(int64_t(C) * (C + 1));
    s0 = c.take<Cx<acc_t>>(D);
    ds = c.take<Cx<acc_t>>(D);
    ks = c.take<Cx<acc_t>>(C);
    qs = c.take<Cx<acc_t>>(C);
    dc = c.take<Cx<acc_t>>(C);
    b = c.take<Cx<acc_t>>(C);
    u = c.take<Cx<acc_t>>(C);
    du = c.take<Cx<acc_t>>(C);
    db = c.take<Cx<acc_t>>(C);
    dG = c.take<Cx<acc_t>>(C);
    red = c.take<acc_t>(2 * kThreads / 32);
    bytes = static_cast<int64_t>(c.at - reinterpret_cast<uintptr_t>(base));
  }
};

template <typename scalar_t, typename acc_t>
struct Grads {
  const scalar_t* grad_o;
  scalar_t *dq, *dk, *dv, *dbeta;
  acc_t *dlog_decay, *dphase;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) chunk_bwd_kernel(Inputs<scalar_t, acc_t> in,
                                                             Sequences seq,
                                                             const Cx<acc_t>* ds_end,
                                                             const acc_t* boundary,
                                                             Grads<scalar_t, acc_t> gr,
                                                             void* global_scratch) {
  using cx = Cx<acc_t>;
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m, LC = C + 1, LD = D + 1;
  const int64_t wrow = c.row * in.H + h;
  ChunkBwdScratch<acc_t> s(
      block_scratch(global_scratch, ChunkBwdScratch<acc_t>(nullptr, C, D, P).bytes), C, D, P);
  load_backward_chunk(in, gr.grad_o, c, h, s.K, s.Q, s.KK, s.QK, s.T, s.beta, s.G, s.gam, s.dy);
  for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
    s.dT[(i / m) * LC + i % m] = 0;
    s.dQK[(i / m) * LC + i % m] = 0;
  }
  for (int i = threadIdx.x; i < m * D; i += blockDim.x) s.dQ[(i / D) * LD + i % D] = s.dK[(i / D) * LD + i % D] = 0;
  for (int t = threadIdx.x; t < m; t += blockDim.x) s.dB[t] = 0;

  for (int p = 0; p < P; ++p) {
    const cx *G = s.G + p * C, *gam = s.gam + p * C, *dy = s.dy + p * C;
    const acc_t* s0raw = boundary + wrow * 2 * P * D + 2 * p * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      s.s0[d] = cx(s0raw[d], s0raw[D + d]);
      s.ds[d] = ds_end[wrow * P * D + p * D + d];
    }
    for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
      const int t = i / m, j = i % m;
      if (j <= t) s.EH[t * LC + j] = edecay(G, t, j);
    }
    __syncthreads();
    // ks_t = k_t·s0, qs_t = q_t·s0, dc_t = k_t·ds;  b_t = β_t v^c_t − β_t Γ_t ks_t.
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
      cx ks, qs, dc;
      for (int d = 0; d < D; ++d) {
        ks += s.s0[d] * s.K[t * LD + d];
        qs += s.s0[d] * s.Q[t * LD + d];
        dc += s.ds[d] * s.K[t * LD + d];
      }
      const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
      const cx vc(to_acc(in.v[2 * pi]), to_acc(in.v[2 * pi + 1]));
      s.ks[t] = ks;
      s.qs[t] = qs;
      s.dc[t] = dc;
      s.b[t] = (vc - gam[t] * ks) * s.beta[t];
    }
    __syncthreads();
    // u = (T_real ⊙ E) b;  du_j = dc_j conj(E_{m−1,j}) + Σ_{t≥j} conj(E_tj QK_tj) dy_t.
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
      cx u, du = s.dc[t] * s.EH[(m - 1) * LC + t].conj();
      for (int j = 0; j <= t; ++j) u += s.EH[t * LC + j] * s.b[j] * s.T[t * LC + j];
      for (int l = t; l < m; ++l) du += (s.EH[l * LC + t] * s.QK[l * LC + t]).conj() * dy[l];
      s.u[t] = u;
      s.du[t] = du;
    }
    __syncthreads();
    // db_j = Σ_{t≥j} conj(E_tj T_tj) du_t.
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
      cx db;
      for (int t = j; t < m; ++t) db += (s.EH[t * LC + j] * s.T[t * LC + j]).conj() * s.du[t];
      s.db[j] = db;
    }
    __syncthreads();
    // dK_t += Re(conj(E_{m−1,t} u_t) ds) + Re(conj(s0) dks_t), dks_t = −β_t conj(Γ_t) db_t;
    // dQ_t += Re(conj(s0) a_t), a_t = dy_t conj(Γ_t).  (reads EH row m−1 before it is reused)
    for (int i = threadIdx.x; i < m * D; i += blockDim.x) {
      const int t = i / D, d = i % D;
      const cx cu = s.EH[(m - 1) * LC + t] * s.u[t];
      const cx dks = gam[t].conj() * s.db[t] * (-s.beta[t]);
      s.dK[t * LD + d] += re_conj_mul(cu, s.ds[d]) + re_conj_mul(s.s0[d], dks);
      s.dQ[t * LD + d] += re_conj_mul(s.s0[d], dy[t] * gam[t].conj());
    }
    // dE_tj = QK_tj dy_t conj(u_j) + T_tj du_t conj(b_j) + [t = m−1] dc_j conj(u_j);
    // dQK_tj += Re(conj(E_tj) dy_t conj(u_j)), dT_tj += Re(conj(E_tj) du_t conj(b_j)) (j < t);
    // EH_tj ← conj(E_tj) dE_tj (j < t), the pieces of dG.
    __syncthreads();
    for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
      const int t = i / m, j = i % m;
      if (j > t) continue;
      const cx e = s.EH[t * LC + j];
      const cx dM = dy[t] * s.u[j].conj(), dTt = s.du[t] * s.b[j].conj();
      s.dQK[t * LC + j] += re_conj_mul(e, dM);
      if (j == t) continue;
      s.dT[t * LC + j] += re_conj_mul(e, dTt);
      cx dE = dM * s.QK[t * LC + j] + dTt * s.T[t * LC + j];
      if (t == m - 1) dE += s.dc[j] * s.u[j].conj();
      s.EH[t * LC + j] = e.conj() * dE;
    }
    // ‖ds·conj(s0)‖: dΓ_{m−1} += Σ_d ds_d conj(s0_d).
    cx dsum;
    for (int d = threadIdx.x; d < D; d += blockDim.x) dsum += s.ds[d] * s.s0[d].conj();
    for (int o = 16; o > 0; o /= 2) {
      dsum.re += __shfl_down_sync(0xffffffffu, dsum.re, o);
      dsum.im += __shfl_down_sync(0xffffffffu, dsum.im, o);
    }
    if (threadIdx.x % 32 == 0) {
      s.red[2 * (threadIdx.x / 32)] = dsum.re;
      s.red[2 * (threadIdx.x / 32) + 1] = dsum.im;
    }
    __syncthreads();
    // dΓ_t = dy_t conj(qs_t) − β_t conj(ks_t) db_t (+ Σ_d ds_d conj(s0_d) at t = m−1);
    // dG_t = conj(Γ_t) dΓ_t + Σ_{j<t} EH_tj − Σ_{l>t} EH_lt;  dv_t = β_t db_t;
    // dβ_t += Re(conj(v^c_t − Γ_t ks_t) db_t).
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
      cx dgam = dy[t] * s.qs[t].conj() - s.ks[t].conj() * s.db[t] * s.beta[t];
      if (t == m - 1)
        for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w)
          dgam += cx(s.red[2 * w], s.red[2 * w + 1]);
      cx dG = gam[t].conj() * dgam;
      for (int j = 0; j < t; ++j) dG += s.EH[t * LC + j];
      for (int l = t + 1; l < m; ++l) dG -= s.EH[l * LC + t];
      s.dG[t] = dG;
      const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
      const cx vc(to_acc(in.v[2 * pi]), to_acc(in.v[2 * pi + 1]));
      const cx dvc = s.db[t] * s.beta[t];
      gr.dv[2 * pi] = from_acc<scalar_t>(dvc.re);
      gr.dv[2 * pi + 1] = from_acc<scalar_t>(dvc.im);
      s.dB[t] += re_conj_mul(vc - gam[t] * s.ks[t], s.db[t]);
    }
    __syncthreads();
    // d log_decay + i·d phase = reverse cumsum of dG.
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
      cx acc;
      for (int l = t; l < m; ++l) acc += s.dG[l];
      const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
      gr.dlog_decay[pi] = acc.re;
      gr.dphase[pi] = acc.im;
    }
    __syncthreads();
  }
  // T_real = (I + A)⁻¹, A_tj = β_t KK_tj (t > j): dA = −T_realᵀ dT T_realᵀ.
  acc_t* X = reinterpret_cast<acc_t*>(s.EH);  // X = dT T_realᵀ, X_lj = Σ_{i≤min(l,j)} dT_li T_ji
  for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
    const int l = i / m, j = i % m;
    acc_t x = 0;
    for (int k = 0; k <= min(l, j); ++k) x += s.dT[l * LC + k] * s.T[j * LC + k];
    X[l * LC + j] = x;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < m * m; i += blockDim.x) {  // dT ← dA_tj = −Σ_{l≥t} T_lt X_lj
    const int t = i / m, j = i % m;
    acc_t a = 0;
    if (j < t)
      for (int l = t; l < m; ++l) a -= s.T[l * LC + t] * X[l * LC + j];
    s.dT[t * LC + j] = a;
  }
  __syncthreads();
  // dβ_t += Σ_j dA_tj KK_tj;  dkk_tj = β_t dA_tj (j < t), dqk = dQK:
  // dK_t += Σ_{j<t} dkk_tj k_j + Σ_{l>t} dkk_lt k_l + Σ_{l≥t} dqk_lt q_l,  dQ_t += Σ_{j≤t} dqk_tj k_j.
  for (int t = threadIdx.x; t < m; t += blockDim.x) {
    acc_t acc = s.dB[t];
    for (int j = 0; j < t; ++j) acc += s.dT[t * LC + j] * s.KK[t * LC + j];
    gr.dbeta[(c.tok0 + t) * in.H + h] = from_acc<scalar_t>(acc);
  }
  for (int i = threadIdx.x; i < m * D; i += blockDim.x) {
    const int t = i / D, d = i % D;
    acc_t dk = s.dK[t * LD + d], dq = s.dQ[t * LD + d];
    for (int j = 0; j < t; ++j) dk += s.beta[t] * s.dT[t * LC + j] * s.K[j * LD + d];
    for (int l = t + 1; l < m; ++l) dk += s.beta[l] * s.dT[l * LC + t] * s.K[l * LD + d];
    for (int l = t; l < m; ++l) dk += s.dQK[l * LC + t] * s.Q[l * LD + d];
    for (int j = 0; j <= t; ++j) dq += s.dQK[t * LC + j] * s.K[j * LD + d];
    const int64_t o = in.qk(c.tok0 + t, h) + d;
    gr.dq[o] = from_acc<scalar_t>(dq);
    gr.dk[o] = from_acc<scalar_t>(dk);
  }
}

}  // namespace cuda
}  // namespace cdssm
