// Block-wide matrix products on bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation) over
// element accessors, for the chunk kernels' (C × C) and (C × D) products; free of torch headers.
//
// out(i, j, Σ_{k<K} a(i, k) b(k, j)) for i < M, j < N, every thread of the block calling it; a and
// b return fp32 values (from shared-memory tiles, possibly combined, e.g. T_tj β_j). An operand
// whose values are exact in bf16 (rows of bf16 inputs) goes to the tensor cores as is; any
// other operand x is split x = hi + lo, hi = bf16(x), lo = bf16(x − hi) (16 significant bits),
// and the product sums hi·hi + hi·lo + lo·hi, so that rounding operands to bf16 never costs more
// than ~2⁻¹⁶ relative per product — far below the bf16 tolerance, and exact enough that the
// state maps built from these products (M = I − KᵀW) chain over 512 chunks without drift.
//
// Warp tiles of 16 × 32 (the A fragment serves four n8 tiles); fragments follow the PTX layout of
// mma.m16n8k16 (lane = 4g + c): A rows g, g + 8, columns 2c, 2c + 1, 2c + 8, 2c + 9; B columns g,
// rows 2c, 2c + 1, 2c + 8, 2c + 9; D rows g, g + 8, columns 2c, 2c + 1. Out-of-range elements
// are zero (the accessors are never called outside [0, M) × [0, K) and [0, K) × [0, N)).
//
// An operand may instead be a Rows tile of bf16 values in shared memory, whose fragments are
// loaded by ldmatrix (four 8 × 8 matrices per instruction instead of a load, convert and pack per
// element pair), or a SplitRows pair of such tiles holding an fp32 operand already split into
// hi + lo (the same bf16 values that the accessor path's split would give, so the same mma calls
// in the same order). Such a tile must hold zeros (not garbage) wherever a warp tile reaches
// beyond [0, M) × [0, K) or [0, K) × [0, N), up to the next multiple of 16, and its rows must be
// 16-byte aligned.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

namespace cdssm {
namespace cuda {
namespace mma {

__device__ inline uint32_t bits(__nv_bfloat162 x) { return *reinterpret_cast<uint32_t*>(&x); }

// (x0, x1) → bf16 pair (x0 in the low half), and its rounding residual when kSplit.
template <bool kSplit>
__device__ inline void pack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  hi = bits(h);
  if (kSplit) {
    const float2 hf = __bfloat1622float2(h);
    lo = bits(__floats2bfloat162_rn(x0 - hf.x, x1 - hf.y));
  }
}

// d += a b for one m16n8k16 tile.
__device__ inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A bf16 tile in shared memory, row stride ld (a multiple of 8): as operand A, element (i, k) is
// p[i·ld + k] when kKContig (the contracted index runs along rows), else p[k·ld + i]; as operand
// B, element (k, j) is p[j·ld + k] when kKContig, else p[k·ld + j].
template <bool kKContig_>
struct Rows {
  static constexpr bool kKContig = kKContig_;
  const __nv_bfloat16* p;
  int ld;
  __device__ const __nv_bfloat16* at(int r, int c) const { return p + r * ld + c; }
};

// The offset of element (r, c) in a tile of row stride ld (a multiple of 64) whose 16-byte granules
// are swizzled: r·ld + 8·((c / 8) ⊕ (r mod 8)) + c mod 8.
__device__ inline int swizzled(int r, int c, int ld) { return r * ld + (((c >> 3) ^ (r & 7)) << 3) + (c & 7); }

// An fp32 operand x split once into two bf16 tiles, hi = bf16(x) and lo = bf16(x − hi) (pack<true>'s
// values), indexed as Rows<kKContig>, stored swizzled (row stride ld a multiple of 64): the
// eight rows that one ldmatrix phase reads then hit distinct banks without padding rows. (The
// XOR changes only the low three bits of the granule index, so a view starting at a column that
// is a multiple of 64 addresses its own columns the same way.)
template <bool kKContig_>
struct SplitRows {
  static constexpr bool kKContig = kKContig_;
  __nv_bfloat16 *hi, *lo;
  int ld;
  // x → (hi, lo) at (r, c) and y at (r, c + 1) (c even): one 4-byte store into each tile.
  __device__ void store2(int r, int c, float x, float y) const {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    const float2 hf = __bfloat1622float2(h);
    const int i = swizzled(r, c, ld);
    *reinterpret_cast<__nv_bfloat162*>(hi + i) = h;
    *reinterpret_cast<__nv_bfloat162*>(lo + i) = __floats2bfloat162_rn(x - hf.x, y - hf.y);
  }
  __device__ void store(int r, int c, float x) const {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    const int i = swizzled(r, c, ld);
    hi[i] = h;
    lo[i] = __float2bfloat16_rn(x - __bfloat162float(h));
  }
};
// One of a SplitRows' tiles, for the fragment loads.
struct Swizzled {
  const __nv_bfloat16* p;
  int ld;
  __device__ const __nv_bfloat16* at(int r, int c) const { return p + swizzled(r, c, ld); }
};

template <typename F>
struct is_rows : std::false_type {};
template <bool kKContig>
struct is_rows<Rows<kKContig>> : std::true_type {};
template <typename F>
struct is_split : std::false_type {};
template <bool kKContig>
struct is_split<SplitRows<kKContig>> : std::true_type {};
template <typename F>
constexpr bool is_tile = is_rows<F>::value || is_split<F>::value;

// Four 8 × 8 bf16 matrices, lane l giving the address of row l % 8 of matrix l / 8 (transposed
// on the way when kTrans).
template <bool kTrans>
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const __nv_bfloat16* row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

// The A fragment of the 16 × 16 tile at (i0, k0) of a Rows or Swizzled tile t (t.at(r, c): the
// address of the 8 elements (r, c .. c + 7), c a multiple of 8).
template <bool kKContig, typename Tile>
__device__ inline void load_a(uint32_t (&a)[4], Tile t, int i0, int k0) {
  const int l = threadIdx.x % 32, mi = l / 8;
  if constexpr (kKContig)  // matrices (rows i0, i0 + 8) × (columns k0, k0 + 8), rows first
    ldmatrix_x4<false>(a, t.at(i0 + l % 16, k0 + 8 * (l / 16)));
  else
    ldmatrix_x4<true>(a, t.at(k0 + l % 8 + 8 * (mi / 2), i0 + 8 * (mi % 2)));
}

// The B fragments of the two n8 tiles at (k0, j0) and (k0, j0 + 8): b[0..1] and b[2..3].
template <bool kKContig, typename Tile>
__device__ inline void load_b2(uint32_t (&b)[4], Tile t, int k0, int j0) {
  const int l = threadIdx.x % 32, mi = l / 8;
  if constexpr (kKContig)
    ldmatrix_x4<false>(b, t.at(j0 + l % 8 + 8 * (mi / 2), k0 + 8 * (mi % 2)));
  else
    ldmatrix_x4<true>(b, t.at(k0 + l % 8 + 8 * (mi % 2), j0 + 8 * (mi / 2)));
}

// acc[n] += the (16 × 8) tile n of Σ_{k<K} A(i0 + i, k) B(k, j0 + 8n + j) for one warp (n < kNT;
// tiles at or beyond N skipped); A and B return 0 outside their ranges. A SplitRows operand is
// split whatever kSplitA / kSplitB say; a Rows operand never.
template <int kNT, bool kSplitA, bool kSplitB, typename FA, typename FB>
__device__ inline void warp_tile(float (&acc)[kNT][4], int i0, int j0, int N, int K, FA A, FB B) {
  constexpr bool kRowsA = is_rows<FA>::value, kRowsB = is_rows<FB>::value;
  constexpr bool kPreA = is_split<FA>::value, kPreB = is_split<FB>::value;
  constexpr bool kLoA = kPreA || (kSplitA && !kRowsA), kLoB = kPreB || (kSplitB && !kRowsB);
  static_assert(!(kRowsB || kPreB) || kNT % 2 == 0, "tile B operands are loaded two n8 tiles at a time");
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t ah[4], al[4];
    const int r0 = i0 + g, ka = k0 + 2 * c;
    if constexpr (kRowsA) {
      load_a<FA::kKContig>(ah, A, i0, k0);
    } else if constexpr (kPreA) {
      load_a<FA::kKContig>(ah, Swizzled{A.hi, A.ld}, i0, k0);
      load_a<FA::kKContig>(al, Swizzled{A.lo, A.ld}, i0, k0);
    } else {
      pack<kSplitA>(A(r0, ka), A(r0, ka + 1), ah[0], al[0]);
      pack<kSplitA>(A(r0 + 8, ka), A(r0 + 8, ka + 1), ah[1], al[1]);
      pack<kSplitA>(A(r0, ka + 8), A(r0, ka + 9), ah[2], al[2]);
      pack<kSplitA>(A(r0 + 8, ka + 8), A(r0 + 8, ka + 9), ah[3], al[3]);
    }
    uint32_t b2[4], b2l[4];
#pragma unroll
    for (int n = 0; n < kNT; ++n) {
      const int j = j0 + 8 * n + g;
      if (j0 + 8 * n >= N) break;
      uint32_t bh[2], bl[2];
      if constexpr (kRowsB) {
        if (n % 2 == 0) load_b2<FB::kKContig>(b2, B, k0, j0 + 8 * n);
        bh[0] = b2[2 * (n % 2)];
        bh[1] = b2[2 * (n % 2) + 1];
      } else if constexpr (kPreB) {
        if (n % 2 == 0) {
          load_b2<FB::kKContig>(b2, Swizzled{B.hi, B.ld}, k0, j0 + 8 * n);
          load_b2<FB::kKContig>(b2l, Swizzled{B.lo, B.ld}, k0, j0 + 8 * n);
        }
        bh[0] = b2[2 * (n % 2)];
        bh[1] = b2[2 * (n % 2) + 1];
        bl[0] = b2l[2 * (n % 2)];
        bl[1] = b2l[2 * (n % 2) + 1];
      } else {
        pack<kSplitB>(B(ka, j), B(ka + 1, j), bh[0], bl[0]);
        pack<kSplitB>(B(ka + 8, j), B(ka + 9, j), bh[1], bl[1]);
      }
      mma_bf16(acc[n], ah, bh);
      if (kLoB) mma_bf16(acc[n], ah, bl);
      if (kLoA) mma_bf16(acc[n], al, bh);
    }
  }
}

// out(i, j, acc) for the elements of a warp tile at (i0, j0) inside [0, M) × [0, N).
template <int kNT, typename FO>
__device__ inline void warp_tile_out(const float (&acc)[kNT][4], int i0, int j0, int M, int N, FO out) {
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
#pragma unroll
  for (int n = 0; n < kNT; ++n) {
    const int j = j0 + 8 * n + 2 * c;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = i0 + g + 8 * (r / 2), jj = j + r % 2;
      if (i < M && jj < N) out(i, jj, acc[n][r]);
    }
  }
}

template <bool kSplitA, bool kSplitB, typename FA, typename FB, typename FO>
__device__ void block_product(int M, int N, int K, FA a, FB b, FO out) {
  constexpr int kNT = 4;  // n8 tiles per warp tile
  const int tiles_m = (M + 15) / 16, tiles_n = (N + 8 * kNT - 1) / (8 * kNT);
  const auto A = [&] {  // bounded accessors (Rows and SplitRows tiles are zero beyond the ranges)
    if constexpr (is_tile<FA>) return a;
    else return [&](int i, int k) { return i < M && k < K ? a(i, k) : 0.f; };
  }();
  const auto B = [&] {
    if constexpr (is_tile<FB>) return b;
    else return [&](int k, int j) { return k < K && j < N ? b(k, j) : 0.f; };
  }();
  for (int w = threadIdx.x / 32; w < tiles_m * tiles_n; w += blockDim.x / 32) {
    const int i0 = (w / tiles_n) * 16, j0 = (w % tiles_n) * 8 * kNT;
    float acc[kNT][4] = {};
    warp_tile<kNT, kSplitA, kSplitB>(acc, i0, j0, N, K, A, B);
    warp_tile_out<kNT>(acc, i0, j0, M, N, out);
  }
}

}  // namespace mma
}  // namespace cuda
}  // namespace cdssm
