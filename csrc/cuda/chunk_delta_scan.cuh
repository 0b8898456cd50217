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
// (2) state_chain, sequential over the chunks of one (sequence, head): boundary states (for long
// sequences in few chains a two-level scan over segments of chunks, Forward (2) below);
// (3) chunk_output, parallel: u from the boundary state, y.
// Backward (gradients dx = ∂L/∂Re x + i·∂L/∂Im x, as the CPU kernel): the chunk-start gradient is
//   ds0 = conj(Γ_{n−1}) ⊙ (Mᵀ ds) + ds_loc,
//   ds_loc = Qᵀ(conj(Γ) ⊙ dy) − Kᵀ(β ⊙ conj(Γ) ⊙ db_loc),  db_loc = (T_real ⊙ E)ᴴ du_loc,
//   du_loc = (QKᵀ ⊙ E)ᴴ dy,
// so (1) bwd_local, parallel: Mᵀ, ds_loc, Γ_{n−1}; (2) state_chain in reverse: ds at every chunk
// end; (3) chunk_bwd, parallel: the CPU kernel's per-chunk backward from s0 and ds.
//
// The (C × C × D) and (C × D × C) products run on bf16 tensor cores for bf16/fp16 inputs
// (block_product → mma_tile.cuh, operands not exact in bf16 split into hi + lo), on CUDA cores
// for fp32/fp64; every decay quantity (G, Γ, E, states, exp/log) stays in fp32 (fp64).
// Phases of G are kept wrapped to (−π, π] so that the fast sincos of E sees |arg| < 2π.
// Shared-memory tiles: K and Q rows in the input dtype (row_stride), fp32/fp64 tiles of D
// columns with row stride D + 1 and of C columns C + 1 (no bank conflicts when a warp walks
// down a column). Kernels have instances for C = D = 64 (fixed_sizes) besides generic ones.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <cstdint>
#include <type_traits>

#include "chunk_decay.cuh"
#include "device_common.cuh"
#include "mma_tile.cuh"

namespace cdssm {
namespace cuda {

// Threads per block. chunk_bwd, the largest kernel, spends most of its time in element-wise
// passes over C × C tiles: two blocks of 16 warps per SM (the most its shared memory allows)
// hide their latency better than two of 8 (−11 %); the other chunk kernels, whose serial phases
// (the triangular inverse, the products' 8 warp tiles) would leave warps idle, lose with 16
// (+23–38 %), and the state chain's steps are bound by their own dependent latency
// (docs/cuda_scan_perf.md, Round 10).
constexpr int kChainThreads = 256, kChunkThreads = 256, kBwdThreads = 512;
// The blocks per SM a kernel is compiled for (__launch_bounds__' minimum, which caps its
// registers at 64 K / (kBlocks · threads)) with fp32 accumulation; fp64 instances keep the
// registers they need. Left to itself ptxas gives chunk_bwd (512 threads) up to 100 registers,
// one block per SM, bwd_local 59 and chunk_prepare 69, three or four blocks where their shared
// memory allows five.
template <typename acc_t, int kBlocks>
constexpr int kFp32Blocks = sizeof(acc_t) == 4 ? kBlocks : 1;

using dev::Cx;
using dev::cexp;
using dev::from_acc;
using dev::re_conj_mul;
using dev::to_acc;

__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Bump allocation of a kernel's scratch (shared memory, or global memory when it does not fit);
// with base 0 it only measures.
struct Carve {
  unsigned char* at;  // a pointer, not an integer, so that the compiler sees shared-memory loads
  template <typename T>
  __host__ __device__ T* take(int64_t n) {
    T* p = reinterpret_cast<T*>(at);
    at += (n * static_cast<int64_t>(sizeof(T)) + 15) & ~int64_t(15);
    return p;
  }
};

// Sequences: token offset base[n] = b·T + start (flattened (B, T)), length len[n], and the
// boundary row of their first chunk chunk_row[n] (chunk_row[N] = rows in use).
struct Sequences {
  const int64_t *base, *len, *chunk_row;
  int64_t N;
};

// The inputs in canonical layout (csrc/ops.cpp) and the sizes. q and k are token rows: row
// (tok, h) at tok·q_st + h·D (a slice of a wider projection is read in place); with `normalize`
// the kernels scale each row to x / √(Σ x² + l2_eps) as they load it, and chunk_bwd returns the
// raw rows' gradients. dq, dk are contiguous.
template <typename scalar_t, typename acc_t>
struct Inputs {
  const scalar_t *q, *k, *v, *beta;
  const acc_t *log_decay, *phase;
  int H, D, P, C;
  int64_t q_st, k_st;
  bool normalize;
  acc_t l2_eps;
  __host__ __device__ int64_t qk(int64_t tok, int h) const { return (tok * H + h) * D; }
};

// The inputs with C and D fixed at compile time (kC, kD > 0; 0 keeps the runtime value): the
// kernels' instances for the model's C = D = 64 then index with shifts and unrolled loops.
template <int kC, int kD, typename scalar_t, typename acc_t>
__device__ inline Inputs<scalar_t, acc_t> fixed_sizes(Inputs<scalar_t, acc_t> in) {
  if (kC > 0) in.C = kC;
  if (kD > 0) in.D = kD;
  return in;
}

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

// A block's scratch: dynamic shared memory (kSmem; the compiler then emits shared-memory
// accesses with 32-bit addresses), else its slice of global_scratch.
template <bool kSmem>
__device__ inline void* block_scratch(void* global_scratch, int64_t bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  if (kSmem) return smem;
  const int64_t block = blockIdx.x + static_cast<int64_t>(gridDim.x) * blockIdx.y;
  return static_cast<unsigned char*>(global_scratch) + block * bytes;
}

// ---------------------------------------------------------------------------------------------
// Block-wide building blocks (all threads call them; each ends without a barrier).

// Row stride of a shared-memory tile of D columns of T: D + 1 words for 4- and 8-byte types (a
// warp walking down a column hits distinct banks), D + 8 for 2-byte types (rows of whole 16-byte
// granules, so that rows are copied with 16-byte accesses).
template <typename T>
__host__ __device__ constexpr int row_stride(int D) { return sizeof(T) == 2 ? D + 8 : D + 1; }

// Words of a tile of C rows that holds a C × C Gram matrix (row stride C + 1) during one phase
// of a kernel and the D-wide W (row stride D + 1) during a later one.
__host__ __device__ constexpr int64_t gram_or_w_words(int C, int D) {
  return int64_t(C) * ((C > D ? C : D) + 1);
}

// Row-wise work on (token, head) rows of D elements: the kRowLanes consecutive lanes of a warp
// that share a row take its granules of 8 elements in turn (lane l: granules l, l + kRowLanes,
// ...), loaded as one 16-byte access for 2-byte types when the row allows it, and reduce a row
// sum with three xor-shuffles. Callers loop with a trip count that is the same for the whole
// block, so that every lane takes part in every shuffle.
constexpr int kRowLanes = 8, kGranule = 8;

// The sum of x over each aligned group of kLanes lanes (a power of two ≤ 32), in every lane of
// the group. Every lane of the warp must call it.
template <int kLanes, typename acc_t>
__device__ inline acc_t lane_sum(acc_t x) {
#pragma unroll
  for (int o = 1; o < kLanes; o *= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
template <int kLanes, typename acc_t>
__device__ inline Cx<acc_t> lane_sum(Cx<acc_t> x) {
  return {lane_sum<kLanes>(x.re), lane_sum<kLanes>(x.im)};
}

// Whether a row's granules can move as 16-byte packs: 2-byte elements, D and the row stride st
// multiples of 8, the base 16-byte aligned.
template <typename scalar_t>
__device__ inline bool granule_rows(const scalar_t* base, int D, int64_t st) {
  return sizeof(scalar_t) == 2 && D % kGranule == 0 && st % kGranule == 0 &&
         reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

// x[e] = p[e] for e < n (≤ kGranule), 0 beyond; one 16-byte load when vec.
template <typename scalar_t, typename acc_t>
__device__ inline void load_granule(acc_t (&x)[kGranule], const scalar_t* p, int n, bool vec) {
  if (sizeof(scalar_t) == 2 && vec) {
    const auto v = dev::load_pack<scalar_t, kGranule>(p);
#pragma unroll
    for (int e = 0; e < kGranule; ++e) x[e] = to_acc(v.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < kGranule; ++e) x[e] = e < n ? to_acc(p[e]) : acc_t(0);
  }
}
template <typename scalar_t, typename acc_t>
__device__ inline void store_granule(scalar_t* p, const acc_t (&x)[kGranule], int n, bool vec) {
  if (sizeof(scalar_t) == 2 && vec) {
    dev::Pack<scalar_t, kGranule> v;
#pragma unroll
    for (int e = 0; e < kGranule; ++e) v.v[e] = from_acc<scalar_t>(x[e]);
    dev::store_pack<scalar_t, kGranule>(p, v);
  } else {
#pragma unroll
    for (int e = 0; e < kGranule; ++e)
      if (e < n) p[e] = from_acc<scalar_t>(x[e]);
  }
}

// A tile to fill from token rows: dst[t·row_stride(D) + d] = row (tok0 + t, h) of src (token
// stride st).
template <typename scalar_t>
struct RowTile {
  scalar_t* dst;
  const scalar_t* src;
  int64_t st;
};

// Each tile's rows t < m, zero for m ≤ t < C (so that whole 16-row blocks of the tile can feed
// the tensor cores), in the input dtype. With in.normalize each row is scaled to
// x / √(Σ_d x_d² + eps) on the way (fp32 sum of squares, rounded to the input dtype: the model's
// l2_normalize), so no pass over the tile and no barrier is added for it. The N tiles' loads of
// a thread are issued together, so that their latencies overlap.
template <int N, typename scalar_t, typename acc_t>
__device__ void load_rows(const RowTile<scalar_t> (&tiles)[N], const Inputs<scalar_t, acc_t>& in,
                          int64_t tok0, int m, int h) {
  const int D = in.D, L = row_stride<scalar_t>(D), C = in.C;
  const scalar_t* src[N];
  bool vec[N];  // the tile's rows (stride D + 8) are then whole granules too
#pragma unroll
  for (int n = 0; n < N; ++n) {
    src[n] = tiles[n].src + tok0 * tiles[n].st + static_cast<int64_t>(h) * D;
    vec[n] = granule_rows(src[n], D, tiles[n].st);
  }
  const int span = kRowLanes * C, step = static_cast<int>(blockDim.x);
  for (int i0 = 0; i0 < span; i0 += step) {  // the same trip count for every thread
    const int i = i0 + static_cast<int>(threadIdx.x), t = i / kRowLanes, l = i % kRowLanes;
    acc_t ss[N];
#pragma unroll
    for (int n = 0; n < N; ++n) ss[n] = 0;
    for (int d = kGranule * l; t < C && d < D; d += kGranule * kRowLanes) {
      acc_t x[N][kGranule];
#pragma unroll
      for (int n = 0; n < N; ++n)
        load_granule(x[n], src[n] + t * tiles[n].st + d, t < m ? min(kGranule, D - d) : 0, vec[n] && t < m);
#pragma unroll
      for (int n = 0; n < N; ++n) {
#pragma unroll
        for (int e = 0; e < kGranule; ++e) ss[n] += x[n][e] * x[n][e];
        store_granule(tiles[n].dst + t * L + d, x[n], min(kGranule, D - d), vec[n]);
      }
    }
    if (!in.normalize) continue;
    acc_t r[N];
#pragma unroll
    for (int n = 0; n < N; ++n) r[n] = rsqrt(lane_sum<kRowLanes>(ss[n]) + in.l2_eps);
    for (int d = kGranule * l; t < m && d < D; d += kGranule * kRowLanes) {  // this lane's own granules
#pragma unroll
      for (int n = 0; n < N; ++n) {
        acc_t x[kGranule];
        load_granule(x, tiles[n].dst + t * L + d, min(kGranule, D - d), vec[n]);
#pragma unroll
        for (int e = 0; e < kGranule; ++e) x[e] *= r[n];
        store_granule(tiles[n].dst + t * L + d, x, min(kGranule, D - d), vec[n]);
      }
    }
  }
}

// dx ← r (dx − x̂ (x̂·dx)), x̂ = r x, r = 1/√(Σ x² + in.l2_eps): the raw row x's gradient from
// its normalised row's, in place, for rows (tok0 + t, h), t < m (x: token rows of stride st, as
// load_rows reads them; dx: contiguous, at in.qk, as the products wrote it). kRowLanes lanes
// per row; all threads call it.
template <typename scalar_t, typename acc_t>
__device__ void l2_normalize_bwd_rows(scalar_t* dx, const scalar_t* x, int64_t st,
                                      const Inputs<scalar_t, acc_t>& in, int64_t tok0, int m, int h) {
  const int D = in.D, C = in.C;
  const acc_t eps = in.l2_eps;
  x += tok0 * st + static_cast<int64_t>(h) * D;
  dx += in.qk(tok0, h);
  const int64_t dst = in.qk(1, 0);  // dx's token stride, H·D
  const bool vec = granule_rows(x, D, st) && granule_rows(dx, D, dst);
  const int span = kRowLanes * C, step = static_cast<int>(blockDim.x);
  for (int i0 = 0; i0 < span; i0 += step) {  // the same trip count for every thread
    const int i = i0 + static_cast<int>(threadIdx.x), t = i / kRowLanes, l = i % kRowLanes;
    const scalar_t* xr = x + t * st;
    scalar_t* g = dx + t * dst;
    acc_t ss = 0, dot = 0;
    for (int d = kGranule * l; t < m && d < D; d += kGranule * kRowLanes) {
      acc_t xv[kGranule], gv[kGranule];
      load_granule(xv, xr + d, min(kGranule, D - d), vec);
      load_granule(gv, g + d, min(kGranule, D - d), vec);
#pragma unroll
      for (int e = 0; e < kGranule; ++e) {
        ss += xv[e] * xv[e];
        dot += xv[e] * gv[e];
      }
    }
    ss = lane_sum<kRowLanes>(ss);
    dot = lane_sum<kRowLanes>(dot);
    const acc_t rn = rsqrt(ss + eps), proj = rn * rn * dot;  // x̂·dx = r (x·dx); times r for x̂
    for (int d = kGranule * l; t < m && d < D; d += kGranule * kRowLanes) {
      acc_t xv[kGranule], gv[kGranule];
      load_granule(xv, xr + d, min(kGranule, D - d), vec);
      load_granule(gv, g + d, min(kGranule, D - d), vec);
#pragma unroll
      for (int e = 0; e < kGranule; ++e) gv[e] = rn * (gv[e] - proj * xv[e]);
      store_granule(g + d, gv, min(kGranule, D - d), vec);
    }
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
// One warp per pair, an inclusive warp scan over 32 tokens at a time with the carry of the last.
template <typename acc_t>
__device__ void cumulate_decay(Cx<acc_t>* G, Cx<acc_t>* gamma, int m, int C, int P) {
  const int lane = threadIdx.x % 32;
  for (int p = threadIdx.x / 32; p < P; p += blockDim.x / 32) {
    Cx<acc_t> carry;
    for (int t0 = 0; t0 < m; t0 += 32) {
      const int t = t0 + lane;
      Cx<acc_t> x = t < m ? G[p * C + t] : Cx<acc_t>();
#pragma unroll
      for (int o = 1; o < 32; o *= 2) {
        const acc_t re = __shfl_up_sync(0xffffffffu, x.re, o), im = __shfl_up_sync(0xffffffffu, x.im, o);
        if (lane >= o) x = Cx<acc_t>(x.re + re, wrap_phase(x.im + im));
      }
      x = Cx<acc_t>(x.re + carry.re, wrap_phase(x.im + carry.im));
      if (t < m) {
        G[p * C + t] = x;
        if (gamma) gamma[p * C + t] = cexp(x);
      }
      carry = Cx<acc_t>(__shfl_sync(0xffffffffu, x.re, 31), __shfl_sync(0xffffffffu, x.im, 31));
    }
  }
}

// Lanes per item of the reductions of a block of kBlock threads: C = 64 items in one pass.
template <int kBlock>
constexpr int kItemLanes = kBlock / 64;

// Items i < n, kLanes lanes each: partial(i, lane) returns the lane's share of item i's sum
// (terms lane, lane + kLanes, ...), use(i, total) runs on the group's first lane. All threads
// call it.
template <int kLanes, typename V, typename Partial, typename Use>
__device__ void lane_reduce(int n, Partial partial, Use use) {
  for (int x0 = 0; x0 < kLanes * n; x0 += blockDim.x) {
    const int x = x0 + threadIdx.x, i = x / kLanes, lane = x % kLanes;
    V acc = V();
    if (i < n) acc = partial(i, lane);
    acc = lane_sum<kLanes>(acc);
    if (i < n && lane == 0) use(i, acc);
  }
}

// out(i, j, Σ_{k<K} a(i, k) b(k, j)) for i < M, j < N, a 4 × 4 register tile per thread: rows
// i0 + r⌈M/4⌉, columns j0 + c⌈N/4⌉ (neighbouring threads take neighbouring columns, so a warp
// reads two rows of a and 16 consecutive columns of b per k). All threads call it.
template <typename acc_t, typename FA, typename FB, typename FO>
__device__ void tile_gemm(int M, int N, int K, FA a, FB b, FO out) {
  const int tm = (M + 3) / 4, tn = (N + 3) / 4;
  for (int x = threadIdx.x; x < tm * tn; x += blockDim.x) {
    const int i0 = x / tn, j0 = x % tn;
    acc_t acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[r][c] = 0;
    for (int k = 0; k < K; ++k) {
      acc_t av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = i0 + r * tm < M ? a(i0 + r * tm, k) : acc_t(0);
#pragma unroll
      for (int c = 0; c < 4; ++c) bv[c] = j0 + c * tn < N ? b(k, j0 + c * tn) : acc_t(0);
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += av[r] * bv[c];
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (i0 + r * tm < M && j0 + c * tn < N) out(i0 + r * tm, j0 + c * tn, acc[r][c]);
  }
}

// The block products of the chunk kernels: bf16 tensor cores (mma_tile.cuh) for bf16 and fp16
// inputs, tile_gemm on CUDA cores (fp32/fp64 accuracy unchanged) otherwise. kAIn / kBIn: the
// operand's values are rows of the inputs (exact in bf16 for bf16 inputs, so not split).
template <typename scalar_t>
constexpr bool kTensorCores =
    std::is_same<scalar_t, __nv_bfloat16>::value || std::is_same<scalar_t, __half>::value;

template <typename scalar_t, bool kAIn, bool kBIn, typename acc_t, typename FA, typename FB,
          typename FO>
__device__ void block_product(int M, int N, int K, FA a, FB b, FO out) {
  if constexpr (kTensorCores<scalar_t>) {
    constexpr bool exact = std::is_same<scalar_t, __nv_bfloat16>::value;
    mma::block_product<!(kAIn && exact), !(kBIn && exact)>(M, N, K, a, b, out);
  } else {
    tile_gemm<acc_t>(M, N, K, a, b, out);
  }
}

// Whether a kernel instance feeds its bf16 input tiles (rows of D + 8 elements, zero beyond the
// chunk) to the tensor cores through ldmatrix: bf16 inputs with C and D fixed multiples of 16.
template <typename scalar_t, int kC, int kD>
constexpr bool kLdm = std::is_same<scalar_t, __nv_bfloat16>::value && kC > 0 && kC % 16 == 0 &&
                      kD > 0 && kD % 16 == 0;

// A product operand from a tile t of input rows (row stride ld): as operand A, (i, k) ↦ t[i·ld + k]
// when kKContig, else t[k·ld + i]; as operand B, (k, j) ↦ t[j·ld + k] when kKContig, else
// t[k·ld + j]. An ldmatrix-fed mma::Rows when kL, else an fp32 accessor.
template <bool kL, bool kKContig, typename scalar_t>
__device__ inline auto rows_a(const scalar_t* t, int ld) {
  if constexpr (kL) return mma::Rows<kKContig>{t, ld};
  else return [=](int i, int k) { return to_acc(kKContig ? t[i * ld + k] : t[k * ld + i]); };
}
template <bool kL, bool kKContig, typename scalar_t>
__device__ inline auto rows_b(const scalar_t* t, int ld) {
  if constexpr (kL) return mma::Rows<kKContig>{t, ld};
  else return [=](int k, int j) { return to_acc(kKContig ? t[j * ld + k] : t[k * ld + j]); };
}

// a_t·b_j for j ≤ t (j < t when strict), t < m, from input tiles: into out[t·(C+1) + j], or
// transposed into out[j·(C+1) + t] (the upper triangle, so that a strictly lower Gram matrix can
// share the tile).
template <bool kL, typename scalar_t, typename acc_t>
__device__ void lower_gram(acc_t* out, const scalar_t* a, const scalar_t* b, int m, int C, int D,
                           bool strict, bool transposed = false) {
  const int L = row_stride<scalar_t>(D);
  block_product<scalar_t, true, true, acc_t>(
      m, m, D, rows_a<kL, true>(a, L), rows_b<kL, true>(b, L),
      [&](int t, int j, acc_t v) {
        if (strict ? j < t : j <= t) out[transposed ? j * (C + 1) + t : t * (C + 1) + j] = v;
      });
}

// T_real = (I + strict_lower(diag(β) KK))⁻¹ (m × m, zero above the diagonal), blockwise with
// 16 × 16 diagonal blocks: each diagonal block by forward substitution,
// T_tj = −β_t (KK_tj + Σ_{j<l<t} KK_tl T_lj), one column per thread held in registers and
// right-looking (once T_lj is known, KK_tl T_lj is added to every later row t: the same terms
// in the same order, on a dependent chain of 16 steps instead of a shared-memory round trip per
// term), then the block diagonals I − J = 1, 2, ... as
//   T_IJ = −T_II X_IJ,  X_IJ = Σ_{J≤K<I} A_IK T_KJ,  A_tl = β_t KK_tl,
// with X_IJ parked transposed in the (unused) upper triangle until the end. For bf16/fp16 inputs
// the two block products run on tensor cores, one warp per (I, J) block and n8 column tile
// (operands split into hi + lo, as every product of T); else on CUDA cores, one element per thread.
template <typename scalar_t, typename acc_t>
__device__ void unit_lower_inverse(acc_t* T, const acc_t* KK, const acc_t* beta, int m, int C) {
  constexpr int kB = 16;
  const int L = C + 1, nb = (m + kB - 1) / kB;
  for (int j = threadIdx.x; j < m; j += blockDim.x) {
    const int t0 = j - j % kB, jl = j % kB;  // the block's first row, j's column in the block
    acc_t acc[kB];                           // acc[r]: row t0 + r's sum so far
#pragma unroll
    for (int r = 0; r < kB; ++r) acc[r] = r > jl && t0 + r < m ? KK[(t0 + r) * L + j] : acc_t(0);
    T[j * L + j] = 1;
#pragma unroll
    for (int l = 1; l < kB; ++l) {
      if (l <= jl || t0 + l >= m) continue;
      const acc_t x = -beta[t0 + l] * acc[l];  // T_{t0+l, j}
      T[(t0 + l) * L + j] = x;
#pragma unroll
      for (int r = l + 1; r < kB; ++r)
        if (t0 + r < m) acc[r] += KK[(t0 + r) * L + t0 + l] * x;
    }
  }
  __syncthreads();
  for (int dist = 1; dist < nb; ++dist) {
    if constexpr (kTensorCores<scalar_t>) {
      // warp w: block J = w / 2, columns c0 + 8 (w % 2) .. + 8 of T_IJ, rows r0 .. r0 + 16.
      for (int w = threadIdx.x / 32; w < 2 * (nb - dist); w += blockDim.x / 32) {
        const int J = w / 2, I = J + dist, r0 = I * kB, c0 = J * kB, n0 = 8 * (w % 2);
        float x[1][4] = {};
        mma::warp_tile<1, true, true>(
            x, 0, n0, kB, dist * kB,
            [&](int i, int k) { return r0 + i < m ? beta[r0 + i] * KK[(r0 + i) * L + c0 + k] : 0.f; },
            [&](int k, int j) {  // T_KJ, K = J + k / 16 (lower triangle only: the diagonal block K = J)
              const int l = c0 + k;
              return l < m && l >= c0 + j ? T[l * L + c0 + j] : 0.f;
            });
        mma::warp_tile_out<1>(x, 0, n0, m - r0, kB, [&](int i, int j, float v) { T[(c0 + j) * L + r0 + i] = v; });
        __syncwarp();
        float y[1][4] = {};
        mma::warp_tile<1, true, true>(
            y, 0, n0, kB, kB,
            [&](int i, int k) { return k <= i && r0 + i < m ? T[(r0 + i) * L + r0 + k] : 0.f; },  // T_II
            [&](int k, int j) { return r0 + k < m ? T[(c0 + j) * L + r0 + k] : 0.f; });          // X_IJ
        mma::warp_tile_out<1>(y, 0, n0, m - r0, kB, [&](int i, int j, float v) { T[(r0 + i) * L + c0 + j] = -v; });
      }
    } else {
      const int items = (nb - dist) * kB * kB;
      for (int x = threadIdx.x; x < items; x += blockDim.x) {
        const int J = x / (kB * kB), I = J + dist;
        const int t = I * kB + (x / kB) % kB, j = J * kB + x % kB;
        if (t >= m) continue;
        acc_t acc = 0;
        for (int l = j; l < I * kB; ++l) acc += KK[t * L + l] * T[l * L + j];
        T[j * L + t] = beta[t] * acc;  // X_tj
      }
      __syncthreads();
      for (int x = threadIdx.x; x < items; x += blockDim.x) {
        const int J = x / (kB * kB), I = J + dist;
        const int t = I * kB + (x / kB) % kB, j = J * kB + x % kB;
        if (t >= m) continue;
        acc_t acc = 0;
        for (int l = I * kB; l <= t; ++l) acc += T[t * L + l] * T[j * L + l];
        T[t * L + j] = -acc;
      }
    }
    __syncthreads();
  }
  for (int x = threadIdx.x; x < m * C; x += blockDim.x)  // (t, j) = (x / C, x % C): C is often fixed
    if (x % C < m && x % C > x / C) T[(x / C) * L + x % C] = 0;
}

// W_td = Σ_{j≤t} T_tj β_j K_jd into the tile W, and densely into global Wg (if given).
template <bool kL, typename scalar_t, typename acc_t>
__device__ void w_tile(acc_t* W, acc_t* Wg, const acc_t* T, const acc_t* beta, const scalar_t* K,
                       int m, int C, int D) {
  const int LK = row_stride<scalar_t>(D);
  block_product<scalar_t, false, true, acc_t>(
      m, D, m, [&](int t, int j) { return T[t * (C + 1) + j] * beta[j]; }, rows_b<kL, false>(K, LK),
      [&](int t, int d, acc_t v) {
        W[t * (D + 1) + d] = v;
        if (Wg) Wg[t * D + d] = v;
      });
}

// Mg = I − Aᵀ B (D × D, densely in global memory) for (m, D) tiles A, B: the decay-free part
// of the chunk's state map M = I − Kᵀ W with (A, B) = (K, W), or its transpose with (W, K)
// (kAIn / kBIn: which of A, B holds input rows).
template <bool kL, typename scalar_t, typename acc_t, typename TA, typename TB>
__device__ void state_map(acc_t* Mg, const TA* A, const TB* B, int m, int D) {
  constexpr bool kAIn = std::is_same<TA, scalar_t>::value, kBIn = std::is_same<TB, scalar_t>::value;
  const int LA = row_stride<TA>(D), LB = row_stride<TB>(D);
  block_product<scalar_t, kAIn, kBIn, acc_t>(
      D, D, m, rows_a<kL && kAIn, false>(A, LA), rows_b<kL && kBIn, false>(B, LB),
      [&](int d, int e, acc_t v) { Mg[d * D + e] = (d == e ? acc_t(1) : acc_t(0)) - v; });
}

// State rows of one (row, head) in the (.., 2P, D) layout -> complex s[p·D + d].
template <typename acc_t>
__device__ void load_state(Cx<acc_t>* s, const acc_t* src, int P, int D) {
  for (int i = threadIdx.x; i < P * D; i += blockDim.x) {
    const int p = i / D, d = i % D;
    s[i] = src ? Cx<acc_t>(src[(2 * p) * D + d], src[(2 * p + 1) * D + d]) : Cx<acc_t>();
  }
}
template <typename acc_t>
__device__ acc_t block_sum(acc_t x) {
  __shared__ double partial[32];  // one per warp of the largest block
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


// ---------------------------------------------------------------------------------------------
// Forward (1): per (chunk, head): W (C, D) and u_loc (C, P) for the output kernel, and the
// chunk's state map s ← Γ_{n−1} ⊙ (M s) + c: M = I − Kᵀ W (D, D), c = Kᵀ(E_{n−1,:} ⊙ u_loc) (P, D),
// Γ_{n−1} (P).

template <typename scalar_t, typename acc_t>
struct PrepareScratch {
  scalar_t* K;
  acc_t *W, *KK, *T, *beta;
  Cx<acc_t> *G, *vb, *eu;
  int64_t bytes;
  __host__ __device__ PrepareScratch(void* base, int C, int D, int P) {
    Carve c{static_cast<unsigned char*>(base)};
    K = c.take<scalar_t>(int64_t(C) * row_stride<scalar_t>(D));
    KK = c.take<acc_t>(gram_or_w_words(C, D));
    W = KK;  // KK is dead once T_real is formed
    T = c.take<acc_t>(int64_t(C) * (C + 1));
    beta = c.take<acc_t>(C);
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    vb = c.take<Cx<acc_t>>(int64_t(C) * P);
    eu = c.take<Cx<acc_t>>(int64_t(C) * P);
    bytes = static_cast<int64_t>(c.at - static_cast<unsigned char*>(base));
  }
};

// One chunk's state map s ← Γ_{n−1} ⊙ (M s) + c as one record of whole 16-byte granules, the
// same in global memory and in the state chain's shared-memory stages (one copy per chunk):
// M (D, D) (transposed in the backward), then c (P, D), then Γ_{n−1} (P).
template <typename acc_t>
struct MapRecord {
  int64_t c_off, gam_off, bytes;
  __host__ __device__ MapRecord(int D, int P) {
    Carve cv{nullptr};
    cv.take<acc_t>(int64_t(D) * D);
    c_off = reinterpret_cast<int64_t>(cv.at);
    cv.take<Cx<acc_t>>(int64_t(P) * D);
    gam_off = reinterpret_cast<int64_t>(cv.at);
    cv.take<Cx<acc_t>>(P);
    bytes = reinterpret_cast<int64_t>(cv.at);
  }
  __device__ acc_t* M(unsigned char* r) const { return reinterpret_cast<acc_t*>(r); }
  __device__ Cx<acc_t>* c(unsigned char* r) const { return reinterpret_cast<Cx<acc_t>*>(r + c_off); }
  __device__ Cx<acc_t>* gam(unsigned char* r) const { return reinterpret_cast<Cx<acc_t>*>(r + gam_off); }
};

// Per-chunk workspace, indexed by (row, head) wrow: W (C, D), u_loc (C, P) [forward only]; the
// state map record.
template <typename acc_t>
struct ChunkWork {
  acc_t* W;
  Cx<acc_t>* ul;
  unsigned char* maps;
  MapRecord<acc_t> rec;
  __device__ unsigned char* map(int64_t wrow) const { return maps + wrow * rec.bytes; }
  __device__ acc_t* M(int64_t wrow) const { return rec.M(map(wrow)); }
  __device__ Cx<acc_t>* c(int64_t wrow) const { return rec.c(map(wrow)); }
  __device__ Cx<acc_t>* gam_end(int64_t wrow) const { return rec.gam(map(wrow)); }
};

template <typename scalar_t, typename acc_t, bool kSmem, int kC = 0, int kD = 0>
__global__ void __launch_bounds__(kChunkThreads, (kFp32Blocks<acc_t, 5>))
    chunk_prepare_kernel(Inputs<scalar_t, acc_t> in_, Sequences seq, ChunkWork<acc_t> ws,
                         void* global_scratch) {
  const auto in = fixed_sizes<kC, kD>(in_);
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m;
  PrepareScratch<scalar_t, acc_t> s(
      block_scratch<kSmem>(global_scratch, PrepareScratch<scalar_t, acc_t>(nullptr, C, D, P).bytes),
                          C, D, P);
  load_rows<1>({{s.K, in.k, in.k_st}}, in, c.tok0, m, h);
  load_decay(s.G, in, c.tok0, m, h);
  for (int i = threadIdx.x; i < m * P; i += blockDim.x) {
    const int t = i / P;
    const int64_t bh = (c.tok0 + t) * in.H + h;
    const acc_t b = to_acc(in.beta[bh]);
    if (i % P == 0) s.beta[t] = b;
    s.vb[i] = Cx<acc_t>(to_acc(in.v[2 * (bh * P + i % P)]), to_acc(in.v[2 * (bh * P + i % P) + 1])) * b;
  }
  __syncthreads();
  lower_gram<kLdm<scalar_t, kC, kD>>(s.KK, s.K, s.K, m, C, D, true);
  cumulate_decay(s.G, static_cast<Cx<acc_t>*>(nullptr), m, C, P);
  __syncthreads();
  unit_lower_inverse<scalar_t>(s.T, s.KK, s.beta, m, C);
  __syncthreads();
  const int64_t wrow = c.row * in.H + h;
  w_tile<kLdm<scalar_t, kC, kD>>(s.W, ws.W + wrow * C * D, s.T, s.beta, s.K, m, C, D);
  // u_loc_t = Σ_{j≤t} E_tj T_tj β_j v^c_j;  eu_t = E_{n−1,t} u_loc_t.
  constexpr int kRow = kItemLanes<kChunkThreads>;
  lane_reduce<kRow, Cx<acc_t>>(
      m * P,
      [&](int i, int lane) {
        const int t = i / P, p = i % P;
        const Cx<acc_t>* G = s.G + p * C;
        Cx<acc_t> acc;
        for (int j = lane; j <= t; j += kRow) acc += edecay(G, t, j) * s.vb[j * P + p] * s.T[t * (C + 1) + j];
        return acc;
      },
      [&](int i, Cx<acc_t> acc) {
        const int t = i / P, p = i % P;
        ws.ul[wrow * C * P + i] = acc;
        s.eu[i] = edecay(s.G + p * C, m - 1, t) * acc;
      });
  __syncthreads();
  state_map<kLdm<scalar_t, kC, kD>, scalar_t>(ws.M(wrow), s.K, s.W, m, D);
  lane_reduce<kRow, Cx<acc_t>>(
      P * D,
      [&](int i, int lane) {
        const int p = i / D, d = i % D;
        Cx<acc_t> acc;
        for (int t = lane; t < m; t += kRow) acc += s.eu[t * P + p] * to_acc(s.K[t * row_stride<scalar_t>(D) + d]);
        return acc;
      },
      [&](int i, Cx<acc_t> acc) { ws.c(wrow)[i] = acc; });
  for (int p = threadIdx.x; p < P; p += blockDim.x) ws.gam_end(wrow)[p] = cexp(s.G[p * C + m - 1]);
}

// Forward (2) and backward (2): per (sequence, head), the chain of chunk state maps, in order
// (forward: s ← Γ_{n−1} ⊙ (M s) + c, storing s at every chunk start, then the final state and
// the mean chunk-end ‖S‖²) or in reverse (backward: ds ← conj(Γ_{n−1}) ⊙ (Mᵀ ds) + ds_loc,
// storing ds at every chunk end, then the initial-state gradient). The maps of the next
// kChainStages − 1 steps are in flight (asynchronous 16-byte copies into a ring of shared-memory
// stages) while the current step runs, so a step waits on no memory latency; s is double
// buffered in the (2P, D) layout of the states (real rows, then imaginary rows), one barrier per
// step. Four lanes share the dot product of one output (p, d), each over a contiguous quarter of
// e read in 16-byte vectors, starting at a rotated vector so that the eight threads of a
// shared-memory phase hit distinct banks (M stored densely, D × D).
//
// A step is bound by its own dependent latency (~0.8 µs), so a long sequence with few chains
// (B = 1, T = 32k: 24 chains of 512 steps) runs as a two-level scan over segments of L chunks,
// whose maps compose into one map of the same form, the decay being a scalar per pair:
//   (g₂, M₂, c₂) ∘ (g₁, M₁, c₁) = (g₂ g₁, M₂ M₁, g₂ ⊙ (M₂ c₁) + c₂),
// (a) segment_maps, parallel over (segment, head): each segment's composite map (its c is the
// chain run from s = 0; M₂ M₁ on tensor cores for bf16/fp16 inputs, operands split hi + lo as
// every fp32 product of the chunk kernels);
// (b) segment_chain, per (sequence, head): the chain over the segment maps, storing the state
// before every segment, then the final state;
// (c) state_chain, parallel over (segment, head): each segment's chunk steps from its start
// state, storing the state before every chunk, and the segment's share of the energy.
// One level is state_chain with one segment holding every chunk.

constexpr int kChainStages = 4;

// s (two buffers of 2P·D), then a ring of kStages map records, each as in global memory.
template <typename acc_t, int kStages = kChainStages>
struct ChainScratch {
  acc_t* s0;
  unsigned char* stage0;
  int64_t s_len;
  MapRecord<acc_t> rec;
  int64_t bytes;
  __host__ __device__ ChainScratch(void* base, int D, int P) : rec(D, P) {
    Carve cv{static_cast<unsigned char*>(base)};
    s_len = int64_t(2) * P * D;
    s0 = cv.take<acc_t>(2 * s_len);
    stage0 = cv.at;
    bytes = static_cast<int64_t>(stage0 - static_cast<unsigned char*>(base)) + kStages * rec.bytes;
  }
  __device__ acc_t* s(int64_t k) const { return s0 + (k & 1) * s_len; }
  __device__ unsigned char* stage(int b) const { return stage0 + b * rec.bytes; }
  // Issues the 16-byte copies of the record at src into stage b, then commits them as one batch
  // (empty when src is null).
  __device__ void prefetch(int b, const unsigned char* src) const {
    if (src) {
      unsigned char* dst = stage(b);
      for (int i = threadIdx.x; i < rec.bytes / 16; i += blockDim.x) __pipeline_memcpy_async(dst + 16 * i, src + 16 * i, 16);
    }
    __pipeline_commit();
  }
};

// dst[i] = src[i], i < n, all threads: 16-byte accesses when both are aligned and n fills whole
// granules.
template <typename T>
__device__ inline void copy_rows(T* dst, const T* src, int64_t n) {
  constexpr int g = 16 / sizeof(T);
  if (n % g == 0 && (reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) % 16 == 0) {
    for (int64_t i = threadIdx.x; i < n / g; i += blockDim.x) dev::store_pack<T, g>(dst + i * g, dev::load_pack<T, g>(src + i * g));
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
  }
}

// dst[i] = src[i], or 0 where src is null (a zero state), i < n, all threads.
template <typename T>
__device__ inline void copy_or_zero(T* dst, const T* src, int64_t n) {
  if (src) copy_rows(dst, src, n);
  else for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = T(0);
}

// Σ_e M[d·D + e] s_e over lane's quarter of e, s = re + i·im (rows of D): 16-byte vectors of M and
// s when kVec (D a multiple of 4 vectors), the vector index rotated by rot; else e = lane, lane + 4, ...
template <bool kVec, typename acc_t>
__device__ inline Cx<acc_t> chain_dot(const acc_t* Md, const acc_t* re, const acc_t* im, int D,
                                      int lane, unsigned rot) {
  Cx<acc_t> acc;
  if constexpr (kVec) {
    constexpr int g = 16 / sizeof(acc_t);
    const unsigned nq = D / (4 * g);
#pragma unroll
    for (unsigned i = 0; i < nq; ++i) {
      const int e = (lane * nq + (i + rot) % nq) * g;
      const auto m = dev::load_pack<acc_t, g>(Md + e), r = dev::load_pack<acc_t, g>(re + e),
                 j = dev::load_pack<acc_t, g>(im + e);
#pragma unroll
      for (int v = 0; v < g; ++v) {
        acc.re += m.v[v] * r.v[v];
        acc.im += m.v[v] * j.v[v];
      }
    }
  } else {
    for (int e = lane; e < D; e += 4) {
      acc.re += Md[e] * re[e];
      acc.im += Md[e] * im[e];
    }
  }
  return acc;
}

// One step s_nxt = g ⊙ (M s_cur) + c with the map record at `map`, g = Γ, or conj(Γ) when kConj;
// returns Σ ‖s_nxt,(p, d)‖² over this thread's items (the forward's energy).
template <bool kConj, int kD, typename acc_t>
__device__ acc_t chain_step(const MapRecord<acc_t>& rec, unsigned char* map, const acc_t* s_cur,
                            acc_t* s_nxt, int D_, int P) {
  // The vector path for the fixed D (whole 16-byte vectors per lane); runtime D takes the scalar one.
  constexpr bool kVec = kD > 0 && kD % (4 * (16 / sizeof(acc_t))) == 0;
  const int D = kD > 0 ? kD : D_, items = 4 * P * D;
  const acc_t* M = rec.M(map);
  acc_t energy = 0;
  for (int x0 = 0; x0 < items; x0 += blockDim.x) {
    const int x = x0 + threadIdx.x, item = x / 4, lane = x % 4;
    const int p = item / D, d = item % D;
    Cx<acc_t> acc;
    if (x < items)
      acc = chain_dot<kVec>(M + d * D, s_cur + 2 * p * D, s_cur + (2 * p + 1) * D, D, lane,
                            (lane >> 1) + 2u * (d & 1));
    acc = lane_sum<4>(acc);
    if (x < items && lane == 0) {
      const Cx<acc_t> g = kConj ? rec.gam(map)[p].conj() : rec.gam(map)[p];
      const Cx<acc_t> s_new = g * acc + rec.c(map)[item];
      s_nxt[2 * p * D + d] = s_new.re;
      s_nxt[(2 * p + 1) * D + d] = s_new.im;
      energy += s_new.norm2();
    }
  }
  return energy;
}

// Runs `steps` steps from sc.s(0), the record of step k at src(k) in global memory (the next
// kStages − 1 in flight): body(k, map, s_cur, s_nxt) with the record in shared memory at map.
// Ends after a barrier, s in sc.s(steps).
template <typename acc_t, int kStages, typename Src, typename Body>
__device__ void walk_maps(const ChainScratch<acc_t, kStages>& sc, int64_t steps, Src src, Body body) {
  const auto at = [&](int64_t k) -> const unsigned char* { return k < steps ? src(k) : nullptr; };
  for (int k = 0; k < kStages - 1; ++k) sc.prefetch(k, at(k));
  for (int64_t k = 0; k < steps; ++k) {
    __pipeline_wait_prior(kStages - 2);
    __syncthreads();  // stage k and s(k) complete; stage k − 1 free
    const int64_t next = k + kStages - 1;
    sc.prefetch(static_cast<int>(next % kStages), at(next));
    body(k, sc.stage(static_cast<int>(k % kStages)), sc.s(k), sc.s(k + 1));
  }
  __pipeline_wait_prior(0);
  __syncthreads();
}

// The chain's sizes, inputs and outputs. Segments of L chunks, S per sequence (the grid's bound;
// S = 1: one level, L ≥ every sequence's chunks). States are (.., 2P, D) rows of SD = 2P·D.
template <typename acc_t>
struct ChainArgs {
  int H, D, P, C;
  int64_t L, S;
  const acc_t* state_in;    // (N, H): the initial state (forward) or final-state gradient, or null (0)
  acc_t* states;            // at each chunk's (row, head): the state before its step
  acc_t* state_out;         // (N, H): the state after the last step
  acc_t* energy;            // forward: (N, H) with one level, else (N, H, S) per-segment sums
  unsigned char* seg_maps;  // two levels: the segment maps at ((n·S + j)·H + h)
  acc_t* seg_start;         // two levels: the state before segment j, at ((n·S + j)·H + h)
  __device__ int64_t chunks(const Sequences& seq, int64_t n) const { return (seq.len[n] + C - 1) / C; }
  // The (row, head) of step k of sequence n's chain (chunk k forward, n_chunks − 1 − k backward).
  template <bool kForward>
  __device__ int64_t wrow(const Sequences& seq, int64_t n, int64_t k, int h) const {
    return (seq.chunk_row[n] + (kForward ? k : chunks(seq, n) - 1 - k)) * H + h;
  }
};

// (a) Segment j = blockIdx.x % S of sequence n = blockIdx.x / S: its composite map into
// seg_maps: c by chain_step from s = 0, γ = Π g_k (pair p kept by thread p mod blockDim), and
// A = M_last ⋯ M_first. The partial products X: with kSplit (the fixed D = 64 and tensor cores)
// as the hi + lo bf16 tiles that the product's operands are split into anyway, M split once per
// step (in place over its fp32 copy in the map stage, after chain_step has read it) instead of
// per warp tile, both fed by ldmatrix, and one warp per 16 × 32 tile of X held in registers
// across a barrier: 68 KB, three blocks per SM with two maps in flight each. Else fp32, double
// buffered, by block_product.
template <typename scalar_t, int kD>
constexpr bool kSegmentSplit = kTensorCores<scalar_t> && kD == 64 && kChainThreads == 256;

template <typename acc_t, bool kSplit>
struct SegmentScratch {
  static constexpr int kStages = kSplit ? 3 : kChainStages;
  ChainScratch<acc_t, kStages> ch;
  Cx<acc_t>* gam;
  acc_t* X;                // fp32: two (D, D + 1) tiles
  __nv_bfloat16 *Xh, *Xl;  // kSplit: (D, D) swizzled tiles
  int D;
  int64_t bytes;
  __host__ __device__ SegmentScratch(void* base, int D_, int P) : ch(base, D_, P), D(D_) {
    Carve cv{static_cast<unsigned char*>(base) + ch.bytes};
    gam = cv.take<Cx<acc_t>>(P);
    if (kSplit) {
      Xh = cv.take<__nv_bfloat16>(int64_t(D) * D), Xl = cv.take<__nv_bfloat16>(int64_t(D) * D);
    } else {
      X = cv.take<acc_t>(2 * int64_t(D) * (D + 1));
    }
    bytes = static_cast<int64_t>(cv.at - static_cast<unsigned char*>(base));
  }
  __device__ acc_t* x(int64_t k) const { return X + (k & 1) * int64_t(D) * (D + 1); }
};

// Step k of a segment's product X ← M X (X = M at k = 0), its result into A (D × D, dense) on
// the last step instead. compose_split: M, the fp32 record at `map`, is split in place once every
// thread has read it (into X at k = 0); four barriers in all.
template <int kD, typename acc_t>
__device__ void compose_split(const SegmentScratch<acc_t, true>& sc, unsigned char* map, int64_t k,
                              bool last, acc_t* A) {
  static_assert(sizeof(acc_t) == 4, "M's hi + lo tiles take the place of its fp32 copy");
  constexpr int kPer = kD * kD / kChainThreads;  // M elements per thread, in pairs
  const float* M = reinterpret_cast<const float*>(map);
  float m[kPer];
#pragma unroll
  for (int r = 0; r < kPer; r += 2) {
    const int i = 2 * threadIdx.x + r * kChainThreads;
    m[r] = M[i], m[r + 1] = M[i + 1];
  }
  __nv_bfloat16* Mh = reinterpret_cast<__nv_bfloat16*>(map);
  const mma::SplitRows<true> Ms{Mh, Mh + kD * kD, kD};  // A operand (d, e)
  const mma::SplitRows<false> Xs{sc.Xh, sc.Xl, kD};      // B operand (e, f)
  if (k > 0) __syncthreads();  // every thread has read the fp32 M
  const mma::SplitRows<true> into{k == 0 ? sc.Xh : Ms.hi, k == 0 ? sc.Xl : Ms.lo, kD};
#pragma unroll
  for (int r = 0; r < kPer; r += 2) {
    const int i = 2 * threadIdx.x + r * kChainThreads;
    into.store2(i / kD, i % kD, m[r], m[r + 1]);
  }
  if (k == 0) return;
  __syncthreads();  // M split
  const int w = threadIdx.x / 32, i0 = (w / 2) * 16, j0 = (w % 2) * 32;
  float acc[4][4] = {};
  mma::warp_tile<4, true, true>(acc, i0, j0, kD, kD, Ms, Xs);
  __syncthreads();  // every warp has read X
  mma::warp_tile_out<4>(acc, i0, j0, kD, kD, [&](int d, int f, float v) {
    if (last) A[d * kD + f] = v;
    else Xs.store(d, f, v);
  });
}

// compose: X in fp32, double buffered, the product by block_product.
template <typename scalar_t, typename acc_t>
__device__ void compose(const SegmentScratch<acc_t, false>& sc, const acc_t* M, int D, int64_t k,
                        bool last, acc_t* A) {
  acc_t* X_nxt = sc.x(k + 1);
  const auto put = [&](int d, int f, acc_t v) {
    if (last) A[d * D + f] = v;
    else X_nxt[d * (D + 1) + f] = v;
  };
  if (k == 0) {
    for (int i = threadIdx.x; i < D * D; i += blockDim.x) put(i / D, i % D, M[i]);
  } else {
    const acc_t* X = sc.x(k);
    block_product<scalar_t, false, false, acc_t>(
        D, D, D, [&](int d, int e) { return M[d * D + e]; }, [&](int e, int f) { return X[e * (D + 1) + f]; },
        put);
  }
}

template <typename scalar_t, typename acc_t, bool kForward, bool kSmem, int kD = 0>
__global__ void __launch_bounds__(kChainThreads, (kFp32Blocks<acc_t, 3>))
    segment_maps_kernel(Sequences seq, ChainArgs<acc_t> a, ChunkWork<acc_t> ws, void* global_scratch) {
  constexpr bool kSplit = kSegmentSplit<scalar_t, kD>;
  using Scratch = SegmentScratch<acc_t, kSplit>;
  const int h = blockIdx.y, D = kD > 0 ? kD : a.D, P = a.P;
  const int64_t n = blockIdx.x / a.S, j = blockIdx.x % a.S, k0 = j * a.L;
  const int64_t steps = min64(a.L, a.chunks(seq, n) - k0);
  if (steps <= 0) return;
  const Scratch sc(block_scratch<kSmem>(global_scratch, Scratch(nullptr, D, P).bytes), D, P);
  for (int i = threadIdx.x; i < sc.ch.s_len; i += blockDim.x) sc.ch.s(0)[i] = 0;
  for (int p = threadIdx.x; p < P; p += blockDim.x) sc.gam[p] = Cx<acc_t>(1, 0);
  unsigned char* out = a.seg_maps + ((n * a.S + j) * a.H + h) * ws.rec.bytes;
  acc_t* A = ws.rec.M(out);
  walk_maps(sc.ch, steps, [&](int64_t k) { return ws.map(a.template wrow<kForward>(seq, n, k0 + k, h)); },
            [&](int64_t k, unsigned char* map, const acc_t* s_cur, acc_t* s_nxt) {
              chain_step<!kForward, kD>(ws.rec, map, s_cur, s_nxt, D, P);
              for (int p = threadIdx.x; p < P; p += blockDim.x)
                sc.gam[p] = (kForward ? ws.rec.gam(map)[p] : ws.rec.gam(map)[p].conj()) * sc.gam[p];
              const acc_t* M = ws.rec.M(map);
              const bool last = k == steps - 1;
              if (k == 0 && last) {
                for (int i = threadIdx.x; i < D * D; i += blockDim.x) A[i] = M[i];
              } else if constexpr (kSplit) {
                compose_split<kD>(sc, map, k, last, A);
              } else {
                compose<scalar_t>(sc, M, D, k, last, A);
              }
            });
  const acc_t* c = sc.ch.s(steps);
  for (int i = threadIdx.x; i < P * D; i += blockDim.x)
    ws.rec.c(out)[i] = Cx<acc_t>(c[2 * (i / D) * D + i % D], c[(2 * (i / D) + 1) * D + i % D]);
  for (int p = threadIdx.x; p < P; p += blockDim.x) ws.rec.gam(out)[p] = sc.gam[p];
}

// (b) Per (sequence, head): the chain over the segment maps (whose g already holds the
// backward's conjugate), storing the state before each segment, then the final state.
template <typename acc_t, bool kSmem, int kD = 0>
__global__ void __launch_bounds__(kChainThreads) segment_chain_kernel(Sequences seq, ChainArgs<acc_t> a,
                                                                      MapRecord<acc_t> rec,
                                                                      void* global_scratch) {
  const int h = blockIdx.y, D = kD > 0 ? kD : a.D, P = a.P;
  const int64_t n = blockIdx.x, SD = int64_t(2) * P * D;
  const ChainScratch<acc_t> sc(block_scratch<kSmem>(global_scratch, ChainScratch<acc_t>(nullptr, D, P).bytes), D, P);
  copy_or_zero(sc.s(0), a.state_in ? a.state_in + (n * a.H + h) * SD : nullptr, SD);
  const int64_t segments = (a.chunks(seq, n) + a.L - 1) / a.L;
  const auto row = [&](int64_t j) { return (n * a.S + j) * a.H + h; };
  walk_maps(sc, segments, [&](int64_t j) { return a.seg_maps + row(j) * rec.bytes; },
            [&](int64_t j, unsigned char* map, const acc_t* s_cur, acc_t* s_nxt) {
              copy_rows(a.seg_start + row(j) * SD, s_cur, SD);
              chain_step<false, kD>(rec, map, s_cur, s_nxt, D, P);
            });
  copy_rows(a.state_out + (n * a.H + h) * SD, sc.s(segments), SD);
}

// (c) Segment j = blockIdx.x % S of sequence n = blockIdx.x / S: its chunk steps from the state
// before it (the initial state for j = 0), storing the state before each. With one level also
// the final state and the energy, the mean ‖s‖² over chunk ends (‖s0‖² for an empty sequence);
// with two, the segment's sum of ‖s‖² (0 past the sequence's end).
template <typename acc_t, bool kForward, bool kSmem, int kD = 0>
__global__ void __launch_bounds__(kChainThreads) state_chain_kernel(Sequences seq, ChainArgs<acc_t> a,
                                                                    ChunkWork<acc_t> ws,
                                                                    void* global_scratch) {
  const int h = blockIdx.y, D = kD > 0 ? kD : a.D, P = a.P;
  const int64_t n = blockIdx.x / a.S, j = blockIdx.x % a.S, k0 = j * a.L, SD = int64_t(2) * P * D;
  const int64_t n_chunks = a.chunks(seq, n), steps = max64(0, min64(a.L, n_chunks - k0));
  const bool one_level = a.S == 1;
  if (steps == 0 && j > 0) {
    if (kForward && threadIdx.x == 0) a.energy[(n * a.H + h) * a.S + j] = 0;
    return;
  }
  const ChainScratch<acc_t> sc(block_scratch<kSmem>(global_scratch, ChainScratch<acc_t>(nullptr, D, P).bytes), D, P);
  const acc_t* start = j == 0 ? (a.state_in ? a.state_in + (n * a.H + h) * SD : nullptr)
                              : a.seg_start + ((n * a.S + j) * a.H + h) * SD;
  copy_or_zero(sc.s(0), start, SD);
  acc_t energy_sum = 0;
  walk_maps(sc, steps, [&](int64_t k) { return ws.map(a.template wrow<kForward>(seq, n, k0 + k, h)); },
            [&](int64_t k, unsigned char* map, const acc_t* s_cur, acc_t* s_nxt) {
              copy_rows(a.states + a.template wrow<kForward>(seq, n, k0 + k, h) * SD, s_cur, SD);
              energy_sum += chain_step<!kForward, kD>(ws.rec, map, s_cur, s_nxt, D, P);
            });
  const acc_t* s_fin = sc.s(steps);
  if (one_level) copy_rows(a.state_out + (n * a.H + h) * SD, s_fin, SD);
  if (kForward) {
    if (n_chunks == 0)
      for (int x = threadIdx.x; x < SD; x += blockDim.x) energy_sum += s_fin[x] * s_fin[x];
    const acc_t total = block_sum(energy_sum);
    if (threadIdx.x == 0) {
      if (one_level) a.energy[n * a.H + h] = total / static_cast<acc_t>(n_chunks > 0 ? n_chunks : 1);
      else a.energy[(n * a.H + h) * a.S + j] = total;
    }
  }
}

// Forward (3): per (chunk, head): u = u_loc − Γ ⊙ (W s0), y_t = Γ_t (q_t·s0) + Σ_{j≤t} E_tj (q_t·k_j) u_j.

template <typename scalar_t, typename acc_t>
struct OutputScratch {
  scalar_t *Q, *K;
  acc_t *W, *QK;
  Cx<acc_t> *G, *u, *s0;
  int64_t bytes;
  __host__ __device__ OutputScratch(void* base, int C, int D, int P) {
    Carve c{static_cast<unsigned char*>(base)};
    Q = c.take<scalar_t>(int64_t(C) * row_stride<scalar_t>(D));
    K = c.take<scalar_t>(int64_t(C) * row_stride<scalar_t>(D));
    QK = c.take<acc_t>(gram_or_w_words(C, D));
    W = QK;  // QK is formed once r = W s0 is
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    u = c.take<Cx<acc_t>>(int64_t(C) * P);
    s0 = c.take<Cx<acc_t>>(int64_t(P) * D);
    bytes = static_cast<int64_t>(c.at - static_cast<unsigned char*>(base));
  }
};

template <typename scalar_t, typename acc_t, bool kSmem, int kC = 0, int kD = 0>
__global__ void __launch_bounds__(kChunkThreads) chunk_output_kernel(Inputs<scalar_t, acc_t> in_,
                                                                     Sequences seq,
                                                                     ChunkWork<acc_t> ws,
                                                                     const acc_t* boundary,
                                                                     scalar_t* o,
                                                                     void* global_scratch) {
  const auto in = fixed_sizes<kC, kD>(in_);
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m;
  const int64_t wrow = c.row * in.H + h;
  OutputScratch<scalar_t, acc_t> s(
      block_scratch<kSmem>(global_scratch, OutputScratch<scalar_t, acc_t>(nullptr, C, D, P).bytes),
                         C, D, P);
  load_rows<2>({{s.Q, in.q, in.q_st}, {s.K, in.k, in.k_st}}, in, c.tok0, m, h);
  load_decay(s.G, in, c.tok0, m, h);
  load_state(s.s0, boundary + wrow * 2 * P * D, P, D);
  for (int i = threadIdx.x; i < m * D; i += blockDim.x)
    s.W[(i / D) * (D + 1) + i % D] = ws.W[wrow * C * D + i];
  __syncthreads();
  // r = W s0 into u (the last read of W, whose place QK takes), then u = u_loc − Γ ⊙ r.
  constexpr int kRow = kItemLanes<kChunkThreads>;
  lane_reduce<kRow, Cx<acc_t>>(
      m * P,
      [&](int i, int lane) {
        const int t = i / P, p = i % P;
        Cx<acc_t> r;
        for (int d = lane; d < D; d += kRow) r += s.s0[p * D + d] * s.W[t * (D + 1) + d];
        return r;
      },
      [&](int i, Cx<acc_t> r) { s.u[i] = r; });
  cumulate_decay(s.G, static_cast<Cx<acc_t>*>(nullptr), m, C, P);
  __syncthreads();
  lower_gram<kLdm<scalar_t, kC, kD>>(s.QK, s.Q, s.K, m, C, D, false);
  for (int i = threadIdx.x; i < m * P; i += blockDim.x)
    s.u[i] = ws.ul[wrow * C * P + i] - cexp(s.G[(i % P) * C + i / P]) * s.u[i];
  __syncthreads();
  lane_reduce<kRow, Cx<acc_t>>(
      m * P,
      [&](int i, int lane) {
        const int t = i / P, p = i % P;
        const Cx<acc_t>* G = s.G + p * C;
        Cx<acc_t> qs, y;
        for (int d = lane; d < D; d += kRow) qs += s.s0[p * D + d] * to_acc(s.Q[t * row_stride<scalar_t>(D) + d]);
        y = cexp(G[t]) * qs;
        for (int j = lane; j <= t; j += kRow) y += edecay(G, t, j) * s.u[j * P + p] * s.QK[t * (C + 1) + j];
        return y;
      },
      [&](int i, Cx<acc_t> y) {
        const int t = i / P, p = i % P;
        scalar_t* ot = o + 2 * (((c.tok0 + t) * in.H + h) * P + p);
        ot[0] = from_acc<scalar_t>(y.re);
        ot[1] = from_acc<scalar_t>(y.im);
      });
}

// ---------------------------------------------------------------------------------------------
// Backward (1): per (chunk, head): Mᵀ, ds_loc (P, D) (into ChunkWork::c) and Γ_{n−1} (P).

template <typename scalar_t, typename acc_t>
struct LocalScratch {
  scalar_t *K, *Q;
  acc_t *W, *KK, *T, *beta;  // KK: KK strictly lower, QK transposed on and above the diagonal
  Cx<acc_t> *G, *gam, *dy, *du, *db;
  int64_t bytes;
  __host__ __device__ LocalScratch(void* base, int C, int D, int P) {
    Carve c{static_cast<unsigned char*>(base)};
    K = c.take<scalar_t>(int64_t(C) * row_stride<scalar_t>(D));
    // Q is dead once QK and Qᵀ(conj(Γ) ⊙ dy) are formed: T_real takes its place.
    const int64_t q_bytes = int64_t(C) * row_stride<scalar_t>(D) * sizeof(scalar_t),
                  t_bytes = int64_t(C) * (C + 1) * sizeof(acc_t);
    unsigned char* qt = c.take<unsigned char>(q_bytes > t_bytes ? q_bytes : t_bytes);
    Q = reinterpret_cast<scalar_t*>(qt);
    T = reinterpret_cast<acc_t*>(qt);
    KK = c.take<acc_t>(gram_or_w_words(C, D));
    W = KK;  // formed once du_loc has read QK from KK
    beta = c.take<acc_t>(C);
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    gam = c.take<Cx<acc_t>>(int64_t(C) * P);
    dy = c.take<Cx<acc_t>>(int64_t(C) * P);
    du = c.take<Cx<acc_t>>(int64_t(C) * P);
    db = c.take<Cx<acc_t>>(int64_t(C) * P);
    bytes = static_cast<int64_t>(c.at - static_cast<unsigned char*>(base));
  }
};

// QK_tj (j ≤ t) from the tile KK that holds KK strictly below the diagonal and QK transposed.
template <typename acc_t>
__device__ inline acc_t qk_at(const acc_t* KK, int t, int j, int C) { return KK[j * (C + 1) + t]; }

// K, Q, β into scratch; KK (strict) and QKᵀ (inclusive) into one tile; G cumulated with Γ;
// dy (P, C) too. Ends with a barrier; T_real is the caller's next step.
template <bool kL, typename scalar_t, typename acc_t>
__device__ void load_backward_tiles(const Inputs<scalar_t, acc_t>& in, const scalar_t* grad_o,
                                    const ChunkPos& c, int m, int h, scalar_t* K, scalar_t* Q,
                                    acc_t* KK, acc_t* beta, Cx<acc_t>* G, Cx<acc_t>* gam,
                                    Cx<acc_t>* dy) {
  const int C = in.C, D = in.D, P = in.P, i = threadIdx.x;
  // When every (t, p) has a thread of its own (m·P ≤ blockDim, the common case) its values are
  // loaded into registers before the rows and stored after them, so that all of the chunk's loads
  // are in flight together; otherwise they load in loops after the rows.
  const bool held = m * P <= static_cast<int>(blockDim.x);
  Cx<acc_t> g, y;
  acc_t b = 0;
  if (held && i < m * P) {
    const int64_t pi = ((c.tok0 + i / P) * in.H + h) * P + i % P;
    g = Cx<acc_t>(in.log_decay[pi], in.phase[pi]);
    y = Cx<acc_t>(to_acc(grad_o[2 * pi]), to_acc(grad_o[2 * pi + 1]));
  }
  if (held && i < m) b = to_acc(in.beta[(c.tok0 + i) * in.H + h]);
  load_rows<2>({{K, in.k, in.k_st}, {Q, in.q, in.q_st}}, in, c.tok0, m, h);
  if (held) {
    if (i < m * P) G[(i % P) * C + i / P] = g, dy[(i % P) * C + i / P] = y;
    if (i < m) beta[i] = b;
  } else {
    load_decay(G, in, c.tok0, m, h);
    for (int t = i; t < m; t += blockDim.x) beta[t] = to_acc(in.beta[(c.tok0 + t) * in.H + h]);
    for (int j = i; j < m * P; j += blockDim.x) {
      const int t = j / P, p = j % P;
      const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
      dy[p * C + t] = Cx<acc_t>(to_acc(grad_o[2 * pi]), to_acc(grad_o[2 * pi + 1]));
    }
  }
  __syncthreads();
  lower_gram<kL>(KK, K, K, m, C, D, true);
  lower_gram<kL>(KK, Q, K, m, C, D, false, true);
  cumulate_decay(G, gam, m, C, P);
  __syncthreads();
}

// out_{p,j} = Σ_{t≥j} conj(E^p_tj X_tj) y_{p,t} for every pair p and j < m (pair-major, stride C):
// the adjoint of y ↦ (X ⊙ E^p) y for a lower-triangular X(t, j); kLanes lanes per (p, j).
template <int kLanes, typename acc_t, typename FX>
__device__ void decayed_adjoint(Cx<acc_t>* out, const Cx<acc_t>* G, FX X, const Cx<acc_t>* y, int m,
                                int C, int P) {
  lane_reduce<kLanes, Cx<acc_t>>(
      C * P,  // (p, j) = (i / C, i % C), j < m
      [&](int i, int lane) {
        const int p = i / C, j = i % C;
        const Cx<acc_t>* Gp = G + p * C;
        Cx<acc_t> acc;
        for (int t = j + lane; t < m; t += kLanes) acc += (edecay(Gp, t, j) * X(t, j)).conj() * y[p * C + t];
        return acc;
      },
      [&](int i, Cx<acc_t> acc) {
        if (i % C < m) out[i] = acc;
      });
}

template <typename scalar_t, typename acc_t, bool kSmem, int kC = 0, int kD = 0>
__global__ void __launch_bounds__(kChunkThreads, (kFp32Blocks<acc_t, 5>))
    bwd_local_kernel(Inputs<scalar_t, acc_t> in_, Sequences seq, const scalar_t* grad_o,
                     ChunkWork<acc_t> ws, void* global_scratch) {
  const auto in = fixed_sizes<kC, kD>(in_);
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y;
  const ChunkPos c = locate_chunk(seq, C);
  if (c.m == 0) return;
  const int m = c.m, LC = C + 1, LD = row_stride<scalar_t>(D);
  const int64_t wrow = c.row * in.H + h;
  LocalScratch<scalar_t, acc_t> s(
      block_scratch<kSmem>(global_scratch, LocalScratch<scalar_t, acc_t>(nullptr, C, D, P).bytes),
                        C, D, P);
  load_backward_tiles<kLdm<scalar_t, kC, kD>>(in, grad_o, c, m, h, s.K, s.Q, s.KK, s.beta, s.G, s.gam, s.dy);
  // ds_loc = Qᵀ(conj(Γ) ⊙ dy) − Kᵀ(β ⊙ conj(Γ) ⊙ db_loc): the first term now (the last read of Q,
  // whose place T_real takes), into the map record's c; the second is subtracted at the end.
  constexpr int kRow = kItemLanes<kChunkThreads>;
  lane_reduce<kRow, Cx<acc_t>>(
      P * D,
      [&](int i, int lane) {
        const int p = i / D, d = i % D;
        Cx<acc_t> acc;
        for (int t = lane; t < m; t += kRow) acc += s.gam[p * C + t].conj() * s.dy[p * C + t] * to_acc(s.Q[t * LD + d]);
        return acc;
      },
      [&](int i, Cx<acc_t> acc) { ws.c(wrow)[i] = acc; });
  __syncthreads();
  unit_lower_inverse<scalar_t>(s.T, s.KK, s.beta, m, C);
  __syncthreads();
  // du_loc_j = Σ_{t≥j} conj(E_tj QK_tj) dy_t (the last read of KK, whose place W takes), then
  // db_loc_j = Σ_{t≥j} conj(E_tj T_tj) du_loc_t
  decayed_adjoint<kRow>(s.du, s.G, [&](int t, int j) { return qk_at(s.KK, t, j, C); }, s.dy, m, C, P);
  __syncthreads();
  w_tile<kLdm<scalar_t, kC, kD>>(s.W, static_cast<acc_t*>(nullptr), s.T, s.beta, s.K, m, C, D);
  __syncthreads();
  state_map<kLdm<scalar_t, kC, kD>, scalar_t>(ws.M(wrow), s.W, s.K, m, D);
  decayed_adjoint<kRow>(s.db, s.G, [&](int t, int j) { return s.T[t * LC + j]; }, s.du, m, C, P);
  __syncthreads();
  // ds_loc's second term, Kᵀ(β ⊙ conj(Γ) ⊙ db_loc)
  lane_reduce<kRow, Cx<acc_t>>(
      P * D,
      [&](int i, int lane) {
        const int p = i / D, d = i % D;
        Cx<acc_t> acc;
        for (int t = lane; t < m; t += kRow)
          acc += s.gam[p * C + t].conj() * s.db[p * C + t] * (s.beta[t] * to_acc(s.K[t * LD + d]));
        return acc;
      },
      [&](int i, Cx<acc_t> acc) { ws.c(wrow)[i] -= acc; });
  for (int p = threadIdx.x; p < P; p += blockDim.x) ws.gam_end(wrow)[p] = s.gam[p * C + m - 1];
}

// Backward (3): per (chunk, head), the CPU kernel's chunk backward from s0 = boundary[row] and
// ds = ds_end[row]: dq, dk, dv, dβ, d log_decay, d phase of the chunk's tokens.

// One pair's work in the per-pair loop of chunk_bwd: the factors of its E (chunk_decay.cuh) and
// the vectors (C each) of its decayed sums: us_t = Σ_{j<t} T_tj E_tj b_j,
// duqs_j = Σ_{t>j} conj(QK_tj E_tj) dy_t, dbs_j = Σ_{t>j} conj(T_tj E_tj) du_t,
// yl_t = Σ_{j<t} QK_tj E_tj u_j, and their operands B ⊙ b, conj(A) ⊙ dy, B ⊙ u, conj(A) ⊙ du.
template <typename acc_t>
struct PairWork {
  DecayBlocks<acc_t> f;
  Cx<acc_t> *us, *duqs, *dbs, *yl, *wb, *xdy, *wu, *ydu;
  __host__ __device__ static int64_t words(int C) { return DecayBlocks<acc_t>::words(C) + 8 * int64_t(C); }
  __host__ __device__ PairWork(Cx<acc_t>* base, int C) : f(base, C) {
    us = base + DecayBlocks<acc_t>::words(C);
    duqs = us + C;
    dbs = duqs + C;
    yl = dbs + C;
    wb = yl + C;
    xdy = wb + C;
    wu = xdy + C;
    ydu = wu + C;
  }
};

// T and `wide` lie back to back: once the per-pair loop is done they are one region of
// 12C(C + 1) bytes (fp32) for the tiles of the final products (chunk_bwd_kernel); during the loop
// `wide` holds the pair's PairWork.
template <typename scalar_t, typename acc_t>
struct ChunkBwdScratch {
  scalar_t *K, *Q;
  acc_t *KK, *beta, *dB;  // KK: KK strictly lower, QK transposed on and above the diagonal
  acc_t* dT;              // dT strictly lower, dQK transposed on and above the diagonal
  acc_t* T;
  Cx<acc_t> *G, *gam, *dy, *vc, *wide;       // G, gam, dy, vc: (P, C); wide: C(C + 1) or more
  Cx<acc_t> *s0, *ds;                        // (P, D)
  Cx<acc_t> *cu, *dks, *a;                   // (P, C): the rank-P parts of dK and dQ
  Cx<acc_t> *ks, *qs, *dc, *b, *u, *du, *dG;  // (C), per pair
  acc_t* red;                                 // 4 words: the pair's sums for t = m − 1
  int64_t bytes;
  __host__ __device__ ChunkBwdScratch(void* base, int C, int D, int P) {
    Carve c{static_cast<unsigned char*>(base)};
    K = c.take<scalar_t>(int64_t(C) * row_stride<scalar_t>(D));
    Q = c.take<scalar_t>(int64_t(C) * row_stride<scalar_t>(D));
    KK = c.take<acc_t>(int64_t(C) * (C + 1));
    dT = c.take<acc_t>(int64_t(C) * (C + 1));
    beta = c.take<acc_t>(C);
    dB = c.take<acc_t>(C);
    G = c.take<Cx<acc_t>>(int64_t(C) * P);
    gam = c.take<Cx<acc_t>>(int64_t(C) * P);
    dy = c.take<Cx<acc_t>>(int64_t(C) * P);
    vc = c.take<Cx<acc_t>>(int64_t(C) * P);
    T = c.take<acc_t>(int64_t(C) * (C + 1));
    wide = c.take<Cx<acc_t>>(max64(int64_t(C) * (C + 1), PairWork<acc_t>::words(C)));
    s0 = c.take<Cx<acc_t>>(int64_t(P) * D);
    ds = c.take<Cx<acc_t>>(int64_t(P) * D);
    cu = c.take<Cx<acc_t>>(int64_t(P) * C);
    dks = c.take<Cx<acc_t>>(int64_t(P) * C);
    a = c.take<Cx<acc_t>>(int64_t(P) * C);
    ks = c.take<Cx<acc_t>>(C);
    qs = c.take<Cx<acc_t>>(C);
    dc = c.take<Cx<acc_t>>(C);
    b = c.take<Cx<acc_t>>(C);
    u = c.take<Cx<acc_t>>(C);
    du = c.take<Cx<acc_t>>(C);
    dG = c.take<Cx<acc_t>>(C);
    red = c.take<acc_t>(4);
    bytes = static_cast<int64_t>(c.at - static_cast<unsigned char*>(base));
  }
};

template <typename scalar_t, typename acc_t>
struct Grads {
  const scalar_t* grad_o;
  scalar_t *dq, *dk, *dv, *dbeta;
  acc_t *dlog_decay, *dphase;
};

// The backward of chunk c (length m) of head blockIdx.y: the body of chunk_bwd_kernel.
template <typename scalar_t, typename acc_t, bool kSmem, int kC, int kD>
__device__ __forceinline__ void chunk_bwd_chunk(const Inputs<scalar_t, acc_t>& in, const ChunkPos& c,
                                                const int m, const acc_t* ds_end,
                                                const acc_t* boundary,
                                                const Grads<scalar_t, acc_t>& gr,
                                                void* global_scratch) {
  using cx = Cx<acc_t>;
  constexpr int kRow = kItemLanes<kBwdThreads>;
  const int C = in.C, D = in.D, P = in.P, h = blockIdx.y, LC = C + 1, LD = row_stride<scalar_t>(D);
  const int64_t wrow = c.row * in.H + h;
  ChunkBwdScratch<scalar_t, acc_t> s(
      block_scratch<kSmem>(global_scratch, ChunkBwdScratch<scalar_t, acc_t>(nullptr, C, D, P).bytes),
      C, D, P);
  // s0, ds (complex rows) and v^c: when each (p, d) and (t, p) has a thread of its own, loaded into
  // registers before the tiles and stored after them (their loads overlap the tiles'), otherwise
  // in loops after the tiles. The pair loop reads them after the inverse's barrier.
  const int tid = threadIdx.x;
  const bool held = P * D <= static_cast<int>(blockDim.x) && m * P <= static_cast<int>(blockDim.x);
  const auto state = [&](const acc_t* x, int j) {
    const acc_t* r = x + (wrow * P + j / D) * 2 * D;
    return cx(r[j % D], r[D + j % D]);
  };
  const auto value = [&](int j) {
    const int64_t pi = ((c.tok0 + j / P) * in.H + h) * P + j % P;
    return cx(to_acc(in.v[2 * pi]), to_acc(in.v[2 * pi + 1]));
  };
  cx s0r, dsr, vr;
  if (held && tid < P * D) s0r = state(boundary, tid), dsr = state(ds_end, tid);
  if (held && tid < m * P) vr = value(tid);
  load_backward_tiles<kLdm<scalar_t, kC, kD>>(in, gr.grad_o, c, m, h, s.K, s.Q, s.KK, s.beta, s.G, s.gam, s.dy);
  if (held) {
    if (tid < P * D) s.s0[tid] = s0r, s.ds[tid] = dsr;
    if (tid < m * P) s.vc[(tid % P) * C + tid / P] = vr;
  } else {
    for (int j = tid; j < P * D; j += blockDim.x) s.s0[j] = state(boundary, j), s.ds[j] = state(ds_end, j);
    for (int j = tid; j < m * P; j += blockDim.x) s.vc[(j % P) * C + j / P] = value(j);
  }
  unit_lower_inverse<scalar_t>(s.T, s.KK, s.beta, m, C);
  __syncthreads();
  for (int i = threadIdx.x; i < m * C; i += blockDim.x)
    if (i % C < m) s.dT[(i / C) * LC + i % C] = 0;
  for (int t = threadIdx.x; t < m; t += blockDim.x) s.dB[t] = 0;

  // The decayed sums over E run on its sub-block factors (chunk_decay.cuh), and dG takes its
  // sums over E ⊙ dE from them: with dE_tj = QK_tj dy_t conj(u_j) + T_tj du_t conj(b_j)
  // + [t = m−1] dc_j conj(u_j) (j < t), the row sums Σ_{j<t} conj(E_tj) dE_tj are
  // dy_t conj(yl_t) + du_t conj(us_t) (+ Σ_{j<m−1} dc_j conj(cu_j) at t = m−1) and the column
  // sums Σ_{l>t} conj(E_lt) dE_lt are conj(u_t) duqs_t + conj(b_t) dbs_t + dc_t conj(cu_t)
  // (t < m−1), cu_t = E_{m−1,t} u_t.
  const PairWork<acc_t> v(s.wide, C);
  const DecayBlocks<acc_t>& f = v.f;
  const auto Tx = [&](int t, int j) { return s.T[t * LC + j]; };
  const auto QKx = [&](int t, int j) { return qk_at(s.KK, t, j, C); };
  for (int p = 0; p < P; ++p) {
    const cx *G = s.G + p * C, *gam = s.gam + p * C, *dy = s.dy + p * C, *vc = s.vc + p * C;
    const cx *s0 = s.s0 + p * D, *ds = s.ds + p * D;
    // ks_t = k_t·s0, qs_t = q_t·s0, dc_t = k_t·ds;  b_t = β_t v^c_t − β_t Γ_t ks_t (kRow lanes
    // per t, each a contiguous share of d); the factors of E.
    f.fill_blocks(G, m);
    const int dshare = (D + kRow - 1) / kRow;
    for (int x0 = 0; x0 < kRow * m; x0 += blockDim.x) {
      const int x = x0 + threadIdx.x, t = x / kRow, lane = x % kRow;
      cx ks, qs, dc;
      if (t < m)
        for (int d = lane * dshare; d < min(D, (lane + 1) * dshare); ++d) {
          const acc_t kd = to_acc(s.K[t * LD + d]);
          ks += s0[d] * kd;
          qs += s0[d] * to_acc(s.Q[t * LD + d]);
          dc += ds[d] * kd;
        }
      ks = lane_sum<kRow>(ks);
      qs = lane_sum<kRow>(qs);
      dc = lane_sum<kRow>(dc);
      if (t < m && lane == 0) {
        const cx b = (vc[t] - gam[t] * ks) * s.beta[t];
        f.fill_token(G, gam, t, m);
        s.ks[t] = ks;
        s.qs[t] = qs;
        s.dc[t] = dc;
        s.b[t] = b;
        v.wb[t] = f.B[t] * b;
        v.xdy[t] = f.A[t].conj() * dy[t];
        s.a[p * C + t] = dy[t] * gam[t].conj();  // dQ_t's rank-P part, summed with the products
      }
    }
    __syncthreads();
    // u = (T_real ⊙ E) b = us + b;  du_t = Σ_{l≥t} conj(E_lt QK_lt) dy_l + dc_t conj(E_{m−1,t})
    // = duqs_t + QK_tt dy_t + dc_t conj(E_{m−1,t}).
    for (int x0 = 0; x0 < kRow * m; x0 += blockDim.x) {
      const int x = x0 + threadIdx.x, t = x / kRow, lane = x % kRow;
      cx us, duqs;
      if (t < m) {
        us = f.template forward_part<kRow>(t, lane, Tx, v.wb, s.b);
        duqs = f.template adjoint_part<kRow>(t, lane, m, QKx, v.xdy, dy);
      }
      us = lane_sum<kRow>(us);
      duqs = lane_sum<kRow>(duqs);
      if (t < m && lane == 0) {
        const cx e = f.E(m - 1, t), u = us + s.b[t], du = duqs + dy[t] * QKx(t, t) + s.dc[t] * e.conj();
        v.us[t] = us;
        v.duqs[t] = duqs;
        s.u[t] = u;
        s.du[t] = du;
        v.wu[t] = f.B[t] * u;
        v.ydu[t] = f.A[t].conj() * du;
        s.cu[p * C + t] = e * u;  // dK_t's rank-P part Re(conj(cu_t) ds)
      }
    }
    __syncthreads();
    // dbs, yl;  dQK_tj += Re(conj(E_tj) dy_t conj(u_j)), dT_tj += Re(conj(E_tj) du_t conj(b_j))
    // (j < t), across sub-blocks Re(conj(A_t) dy_t conj(F_ab B_j u_j)) and its dT twin.
    for (int x0 = 0; x0 < kRow * m; x0 += blockDim.x) {
      const int x = x0 + threadIdx.x, t = x / kRow, lane = x % kRow;
      cx dbs, yl;
      if (t < m) {
        dbs = f.template adjoint_part<kRow>(t, lane, m, Tx, v.ydu, s.du);
        yl = f.template forward_part<kRow>(t, lane, QKx, v.wu, s.u);
      }
      dbs = lane_sum<kRow>(dbs);
      yl = lane_sum<kRow>(yl);
      if (t < m && lane == 0) {
        v.dbs[t] = dbs;
        v.yl[t] = yl;
      }
    }
    for (int i = threadIdx.x; i < m * C; i += blockDim.x) {
      const int t = i / C, j = i % C, a = t / kSub, b = j / kSub;
      if (j > t) continue;
      if (a == b) {
        const cx e = f.band[t * kBand + j - a * kSub];
        s.dT[j * LC + t] += re_conj_mul(e, dy[t] * s.u[j].conj());  // dQK_tj
        if (j < t) s.dT[t * LC + j] += re_conj_mul(e, s.du[t] * s.b[j].conj());
      } else {
        const cx F = f.F[a * f.nbC + b];
        s.dT[j * LC + t] += re_conj_mul(F * v.wu[j], v.xdy[t]);
        s.dT[t * LC + j] += re_conj_mul(F * v.wb[j], v.ydu[t]);
      }
    }
    // Σ_d ds_d conj(s0_d) (dΓ_{m−1}'s term of the state) and Σ_{j<m−1} dc_j conj(cu_j), on warp 0.
    if (threadIdx.x < 32) {
      cx sd, sc;
      for (int d = threadIdx.x; d < D; d += 32) sd += ds[d] * s0[d].conj();
      for (int j = threadIdx.x; j < m - 1; j += 32) sc += s.dc[j] * s.cu[p * C + j].conj();
      sd = lane_sum<32>(sd);
      sc = lane_sum<32>(sc);
      if (threadIdx.x == 0) {
        s.red[0] = sd.re;
        s.red[1] = sd.im;
        s.red[2] = sc.re;
        s.red[3] = sc.im;
      }
    }
    __syncthreads();
    // db = dbs + du;  dΓ_t = dy_t conj(qs_t) − β_t conj(ks_t) db_t (+ Σ_d ds_d conj(s0_d) at
    // t = m−1);  dG_t = conj(Γ_t) dΓ_t + (row sum − column sum of conj(E) ⊙ dE, above);
    // dv_t = β_t db_t;  dβ_t += Re(conj(v^c_t − Γ_t ks_t) db_t);  dks_t = −β_t conj(Γ_t) db_t.
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
      const cx db = v.dbs[t] + s.du[t];
      cx dgam = dy[t] * s.qs[t].conj() - s.ks[t].conj() * db * s.beta[t];
      cx rows = dy[t] * v.yl[t].conj() + s.du[t] * v.us[t].conj();
      cx cols = s.u[t].conj() * v.duqs[t] + s.b[t].conj() * v.dbs[t];
      if (t == m - 1) {
        dgam += cx(s.red[0], s.red[1]);
        rows += cx(s.red[2], s.red[3]);
      } else {
        cols += s.dc[t] * s.cu[p * C + t].conj();
      }
      s.dG[t] = rows - cols + gam[t].conj() * dgam;
      const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
      const cx dvc = db * s.beta[t];
      gr.dv[2 * pi] = from_acc<scalar_t>(dvc.re);
      gr.dv[2 * pi + 1] = from_acc<scalar_t>(dvc.im);
      s.dB[t] += re_conj_mul(vc[t] - gam[t] * s.ks[t], db);
      s.dks[p * C + t] = gam[t].conj() * db * (-s.beta[t]);  // dK_t's rank-P part Re(conj(s0) dks_t)
    }
    __syncthreads();
    // d log_decay + i·d phase = reverse cumsum of dG.
    lane_reduce<kRow, cx>(
        m,
        [&](int t, int lane) {
          cx acc;
          for (int l = t + lane; l < m; l += kRow) acc += s.dG[l];
          return acc;
        },
        [&](int t, cx acc) {
          const int64_t pi = ((c.tok0 + t) * in.H + h) * P + p;
          gr.dlog_decay[pi] = acc.re;
          gr.dphase[pi] = acc.im;
        });
    __syncthreads();
  }
  // T_real = (I + A)⁻¹, A_tj = β_t KK_tj (t > j): dA = −T_realᵀ dT T_realᵀ, with dT and T_real
  // zero above the diagonal. X = dT T_realᵀ, then dT ← dA (strictly lower).
  // With kPre (bf16 inputs, C a multiple of 64) the fp32 operands of these products and of dK / dQ
  // are split into bf16 hi + lo once, into swizzled SplitRows tiles fed by ldmatrix, instead of in
  // every warp's fragment loads: the same values into the same mma calls. They live in the
  // region of T and `wide` (bf16 elements, C² per tile): X at 0 and 1 (inside T's fp32 tile),
  // T_real at R + 0 and 1, the strictly lower dT at R + 2 and 3 (R = 2C(C + 1), wide's start); after the
  // two products the dK operand (C × 2C) at 0 and 2.
  constexpr bool kL = kLdm<scalar_t, kC, kD>, kPre = kL && kC % 64 == 0;
  __nv_bfloat16* const bf = reinterpret_cast<__nv_bfloat16*>(s.T);
  const int CC = C * C, R = 2 * C * (C + 1);
  const mma::SplitRows<true> Xs{bf, bf + CC, C}, Ts{bf + R, bf + R + CC, C}, dTs{bf + R + 2 * CC, bf + R + 3 * CC, C};
  acc_t* X = reinterpret_cast<acc_t*>(s.wide);
  if constexpr (kPre) {
    for (int i = threadIdx.x; i < CC / 2; i += blockDim.x) {
      const int t = i / (C / 2), j = 2 * (i % (C / 2));
      const bool in = t < m && j < m, in1 = t < m && j + 1 < m;
      Ts.store2(t, j, in ? s.T[t * LC + j] : 0.f, in1 ? s.T[t * LC + j + 1] : 0.f);
      dTs.store2(t, j, in && j < t ? s.dT[t * LC + j] : 0.f, in1 && j + 1 < t ? s.dT[t * LC + j + 1] : 0.f);
    }
    __syncthreads();
  }
  // X rows and columns m .. m16 − 1 are written too (zeros: the operands are zero there), since
  // the tile feeds the next product whole.
  const int m16 = kPre ? (m + 15) / 16 * 16 : m;
  block_product<scalar_t, false, false, acc_t>(
      m16, m16, m,
      [&] {
        if constexpr (kPre) return dTs;
        else return [&](int l, int k) { return k < l ? s.dT[l * LC + k] : acc_t(0); };
      }(),
      [&] {
        if constexpr (kPre) return Ts;
        else return [&](int k, int j) { return s.T[j * LC + k]; };
      }(),
      [&](int l, int j, acc_t v) {
        if constexpr (kPre) Xs.store(l, j, v);
        else X[l * LC + j] = v;
      });
  __syncthreads();
  block_product<scalar_t, false, false, acc_t>(
      m, m, m,
      [&] {
        if constexpr (kPre) return mma::SplitRows<false>{Ts.hi, Ts.lo, C};
        else return [&](int t, int l) { return s.T[l * LC + t]; };
      }(),
      [&] {
        if constexpr (kPre) return mma::SplitRows<false>{Xs.hi, Xs.lo, C};
        else return [&](int l, int j) { return X[l * LC + j]; };
      }(),
      [&](int t, int j, acc_t v) {
        if (j < t) s.dT[t * LC + j] = -v;
      });
  __syncthreads();
  // dβ_t += Σ_j dA_tj KK_tj;  dkk_tj = β_t dA_tj (j < t), dqk = dQK (zero above the diagonal):
  // dK = (dkk + dkkᵀ) K + dqkᵀ Q (one product over the C + C rows of the K and Q tiles, which
  // lie back to back), dQ = dqk K.
  lane_reduce<kRow, acc_t>(
      m,
      [&](int t, int lane) {
        acc_t acc = 0;
        for (int j = lane; j < t; j += kRow) acc += s.dT[t * LC + j] * s.KK[t * LC + j];
        return acc;
      },
      [&](int t, acc_t acc) { gr.dbeta[(c.tok0 + t) * in.H + h] = from_acc<scalar_t>(acc + s.dB[t]); });
  // The dK operand: row t = (dkk_t,: , dQK_{:,t}) over 2C columns.
  const auto dk_a = [&](int t, int k) {
    if (k >= C) return k - C < m && t <= k - C ? s.dT[t * LC + k - C] : acc_t(0);  // dQK_{k−C,t}
    return k >= m ? acc_t(0) : k < t ? s.beta[t] * s.dT[t * LC + k] : k > t ? s.beta[k] * s.dT[k * LC + t] : acc_t(0);
  };
  const mma::SplitRows<true> dKs{bf, bf + 2 * CC, 2 * C};
  if constexpr (kPre) {
    for (int i = threadIdx.x; i < CC; i += blockDim.x) {
      const int t = i / C, k = 2 * (i % C);
      dKs.store2(t, k, t < m ? dk_a(t, k) : 0.f, t < m ? dk_a(t, k + 1) : 0.f);
    }
    __syncthreads();
  }
  block_product<scalar_t, false, true, acc_t>(
      m, D, 2 * C,
      [&] {
        if constexpr (kPre) return dKs;
        else return dk_a;
      }(),
      [&] {
        if constexpr (kL) return mma::Rows<false>{s.K, LD};  // s.Q == s.K + C·LD
        else return [&](int k, int d) { return to_acc(k < C ? s.K[k * LD + d] : s.Q[(k - C) * LD + d]); };
      }(),
      [&](int t, int d, acc_t v) {
#pragma unroll 1  // P is not known at compile time: unrolled per output element, this loop was
        for (int p = 0; p < P; ++p)  // most of the kernel's code (instruction-cache stalls)
          v += re_conj_mul(s.cu[p * C + t], s.ds[p * D + d]) + re_conj_mul(s.s0[p * D + d], s.dks[p * C + t]);
        gr.dk[in.qk(c.tok0 + t, h) + d] = from_acc<scalar_t>(v);
      });
  // dQ's operand dQK_tj is the dK operand's (j, C + t) (a view at column C, a multiple of 64).
  block_product<scalar_t, false, true, acc_t>(
      m, D, m,
      [&] {
        if constexpr (kPre) return mma::SplitRows<false>{dKs.hi + C, dKs.lo + C, 2 * C};
        else return [&](int t, int j) { return j <= t ? s.dT[j * LC + t] : acc_t(0); };  // dQK_tj
      }(),
      rows_b<kL, false>(s.K, LD),
      [&](int t, int d, acc_t v) {
#pragma unroll 1  // as in dK's epilogue
        for (int p = 0; p < P; ++p) v += re_conj_mul(s.s0[p * D + d], s.a[p * C + t]);
        gr.dq[in.qk(c.tok0 + t, h) + d] = from_acc<scalar_t>(v);
      });
  if (in.normalize) {  // the raw rows' gradients, from this block's rows of dq and dk just written
    __syncthreads();
    l2_normalize_bwd_rows(gr.dq, in.q, in.q_st, in, c.tok0, m, h);
    l2_normalize_bwd_rows(gr.dk, in.k, in.k_st, in, c.tok0, m, h);
  }
}

// With C fixed (kC > 0), full chunks (m = C, all of them when T is a multiple of C and there are
// no cu_seqlens) run an inlined copy of the body in which m is that constant, so that the bounds
// tests of its loops and accessors fold away (−10 % of this kernel's time on an H100); the
// other chunks run the general copy. Both compute the same values in the same order.
template <typename scalar_t, typename acc_t, bool kSmem, int kC = 0, int kD = 0>
__global__ void __launch_bounds__(kBwdThreads, (kFp32Blocks<acc_t, 2>))
    chunk_bwd_kernel(Inputs<scalar_t, acc_t> in_, Sequences seq, const acc_t* ds_end,
                     const acc_t* boundary, Grads<scalar_t, acc_t> gr, void* global_scratch) {
  const auto in = fixed_sizes<kC, kD>(in_);
  const ChunkPos c = locate_chunk(seq, in.C);
  if (c.m == 0) return;
  if (kC > 0 && c.m == kC)
    chunk_bwd_chunk<scalar_t, acc_t, kSmem, kC, kD>(in, c, kC, ds_end, boundary, gr, global_scratch);
  else
    chunk_bwd_chunk<scalar_t, acc_t, kSmem, kC, kD>(in, c, c.m, ds_end, boundary, gr, global_scratch);
}

}  // namespace cuda
}  // namespace cdssm
