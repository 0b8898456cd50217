// CUDA kernels of causal_conv1d_silu_{fwd,bwd} (the CPU kernel's formula, csrc/cpu/
// causal_conv1d_silu_cpu.cpp); free of torch headers so that it compiles alone.
//
// Per sequence of length L with extended input ext = (initial state ++ x), W − 1 + L positions:
//   z_t = bias + Σ_{i<W} w_i · x_{t−W+1+i}      (x_τ for τ before the sequence: ext, i.e. the
//                                                initial state, or zeros),
//   y_t = SiLU(z_t) = z_t σ(z_t),   dz_t = dy_t σ(z_t)(1 + z_t(1 − σ(z_t))),
//   dx_τ = Σ_{t=τ}^{τ+W−1} dz_t w_{τ−t+W−1}  (t inside the sequence) + the final state's gradient,
//   dw_i = Σ_t dz_t x_{t−W+1+i},   dbias = Σ_t dz_t,   final state_j = ext[L + j].
//
// x's rows may be strided (ConvArgs::x_at); y, dy and dx are contiguous.
// Layout of the work: a thread owns kVec consecutive channels (one 16-byte access of x) and a tile
// of kTile consecutive tokens of one row; a warp spans 32 channel groups at the same tokens, so
// every access of x, y, dy, dx is coalesced. The last kK inputs sit in a register window
// (kK ≥ W; taps i < kK − W carry weight 0), so each input is read and converted once per tile;
// the window restarts from the initial state at every sequence start inside the tile. Rows are
// loaded kAhead at a time before the first is used, so that several accesses are in flight.
// The backward scatters dz_t into a register ring of the kK positions still receiving; a
// position leaves the ring complete. dw, dbias: per-block partial sums (fixed order) into a
// workspace, then conv_param_reduce_kernel sums the blocks in order — deterministic, no atomics.
// Invalid cu_seqlens: every offset is clamped into [0, T] (no access leaves the tensors).
#pragma once

#include "device_common.cuh"

namespace cdssm {
namespace conv {

using dev::Pack;
using dev::to_acc;

constexpr int kTile = 32;     // tokens per thread
constexpr int kAhead = 4;     // rows of x (and dy) loaded before the first of them is used
constexpr int kFwdRows = 8;   // thread rows (tiles) per forward block of 32 × kFwdRows
constexpr int kBwdRows = 4;   // per backward block

template <typename scalar_t>
struct ConvArgs {
  const scalar_t *x, *weight, *bias, *initial;  // initial: (N, E, W − 1) or nullptr (zeros)
  const int32_t* cu;                            // (N + 1) offsets, or nullptr: N = B rows
  int64_t B, T, E, N;
  int64_t x_sb, x_st;  // x's row strides (a slice of a wider projection); y, dy, dx contiguous
  int W;

  __device__ const scalar_t* x_at(int64_t row, int64_t t, int64_t e) const {
    return x + row * x_sb + t * x_st + e;
  }
};

// The sequence that the tokens of one row walk through: index n, token range [start, end).
struct Cursor {
  int64_t n, start, end;
};

__device__ inline Cursor cursor_at(const int32_t* cu, int64_t N, int64_t T, int64_t row, int64_t t) {
  if (cu == nullptr) return {row, 0, T};
  const int64_t n = dev::seq_of_token(cu, N, t);
  const dev::SeqRange r = dev::seq_range(cu, n, T);
  return {n, r.start, r.end};
}

// Moves c forward to the sequence holding token t (t never decreases); true at a sequence start.
__device__ inline bool advance(Cursor& c, const int32_t* cu, int64_t N, int64_t T, int64_t t) {
  while (cu != nullptr && t >= c.end && c.n < N - 1) {
    ++c.n;
    const dev::SeqRange r = dev::seq_range(cu, c.n, T);
    c.start = r.start;
    c.end = r.end;
  }
  return t == c.start;
}

template <typename acc_t>
__device__ inline acc_t sigmoid(acc_t z) { return acc_t(1) / (acc_t(1) + exp(-z)); }

// ext value at token pos of c's sequence (pos may precede it), channels e0 .. e0 + kVec − 1.
template <typename scalar_t, typename acc_t, int kVec>
__device__ inline void load_ext(acc_t (&out)[kVec], const ConvArgs<scalar_t>& a, const Cursor& c,
                                int64_t row, int64_t pos, int64_t e0) {
  if (pos >= c.start) {
    const Pack<scalar_t, kVec> p = dev::load_pack<scalar_t, kVec>(a.x_at(row, pos, e0));
#pragma unroll
    for (int v = 0; v < kVec; ++v) out[v] = to_acc(p.v[v]);
    return;
  }
  const int64_t j = (a.W - 1) - (c.start - pos);  // initial-state column
#pragma unroll
  for (int v = 0; v < kVec; ++v)
    out[v] = (a.initial != nullptr && j >= 0)
                 ? to_acc(a.initial[(c.n * a.E + e0 + v) * (a.W - 1) + j])
                 : acc_t(0);
}

// The per-thread window xw[i] = ext at token t − kK + 1 + i, and the padded weights.
template <typename scalar_t, typename acc_t, int kVec, int kK>
struct Window {
  acc_t w[kK][kVec], bias[kVec], xw[kK][kVec];

  __device__ void load_weights(const ConvArgs<scalar_t>& a, int64_t e0) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      bias[v] = to_acc(a.bias[e0 + v]);
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        const int tap = i - (kK - a.W);
        w[i][v] = tap >= 0 ? to_acc(a.weight[(e0 + v) * a.W + tap]) : acc_t(0);
      }
    }
  }

  // Slides to token t, whose input row is x_t: refills the older taps from ext when `refill`
  // (tile or sequence start), else shifts.
  __device__ void step(const ConvArgs<scalar_t>& a, const Cursor& c, int64_t row, int64_t t,
                       int64_t e0, bool refill, const Pack<scalar_t, kVec>& x_t) {
    if (refill) {
#pragma unroll
      for (int i = 0; i < kK - 1; ++i) load_ext<scalar_t, acc_t, kVec>(xw[i], a, c, row, t - (kK - 1) + i, e0);
    } else {
#pragma unroll
      for (int i = 0; i < kK - 1; ++i)
#pragma unroll
        for (int v = 0; v < kVec; ++v) xw[i][v] = xw[i + 1][v];
    }
#pragma unroll
    for (int v = 0; v < kVec; ++v) xw[kK - 1][v] = to_acc(x_t.v[v]);
  }

  __device__ acc_t z(int v) const {
    acc_t acc = bias[v];
#pragma unroll
    for (int i = 0; i < kK; ++i) acc += w[i][v] * xw[i][v];
    return acc;
  }
};

// y; grid (ceil(G / 32), ceil(n_tiles / kFwdRows), B), block (32, kFwdRows), G = E / kVec.
template <typename scalar_t, typename acc_t, int kVec, int kK>
__global__ void __launch_bounds__(32 * kFwdRows, 2) conv_fwd_kernel(ConvArgs<scalar_t> a, scalar_t* y) {
  const int64_t g = blockIdx.x * 32 + threadIdx.x;
  const int64_t p0 = (static_cast<int64_t>(blockIdx.y) * kFwdRows + threadIdx.y) * kTile;
  const int64_t row = blockIdx.z;
  if (g >= a.E / kVec || p0 >= a.T) return;
  const int64_t e0 = g * kVec, p1 = min(p0 + kTile, a.T);
  Window<scalar_t, acc_t, kVec, kK> win;
  win.load_weights(a, e0);
  Cursor c = cursor_at(a.cu, a.N, a.T, row, p0);
  for (int64_t t0 = p0; t0 < p1; t0 += kAhead) {
    Pack<scalar_t, kVec> xs[kAhead];
#pragma unroll
    for (int u = 0; u < kAhead; ++u)
      if (t0 + u < p1) xs[u] = dev::load_pack<scalar_t, kVec>(a.x_at(row, t0 + u, e0));
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t t = t0 + u;
      if (t >= p1) break;
      const bool start = advance(c, a.cu, a.N, a.T, t);
      win.step(a, c, row, t, e0, start || t == p0, xs[u]);
      Pack<scalar_t, kVec> out;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const acc_t z = win.z(v);
        out.v[v] = dev::from_acc<scalar_t>(z * sigmoid(z));
      }
      dev::store_pack(y + (row * a.T + t) * a.E + e0, out);
    }
  }
}

// Final conv state (N, E, W − 1): ext[L + j] = x_{end − W + 1 + j} (or the initial state when
// L + j < W − 1); one thread per element.
template <typename scalar_t, typename acc_t>
__global__ void conv_final_state_kernel(ConvArgs<scalar_t> a, scalar_t* final_state) {
  const int64_t S = a.W - 1, numel = a.N * a.E * S;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < numel;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = idx % S, e = (idx / S) % a.E, n = idx / (S * a.E);
    const dev::SeqRange r = dev::seq_range(a.cu, n, a.T);
    acc_t out[1];
    load_ext<scalar_t, acc_t, 1>(out, a, Cursor{n, r.start, r.end}, a.cu == nullptr ? n : 0,
                                 r.end - S + j, e);
    final_state[idx] = dev::from_acc<scalar_t>(out[0]);
  }
}

// dz = dy · d SiLU(z) / dz.
template <typename acc_t>
__device__ inline acc_t silu_grad(acc_t z, acc_t dy) {
  const acc_t s = sigmoid(z);
  return dy * s * (acc_t(1) + z * (acc_t(1) - s));
}

// dx and the per-block partial sums of dw, dbias into partial (n_parts, W + 1, E), part =
// blockIdx.z · gridDim.y + blockIdx.y, row W the bias; grid (ceil(G / 32), ceil(n_tiles / kBwdRows), B),
// block (32, kBwdRows).
template <typename scalar_t, typename acc_t, int kVec, int kK>
__global__ void __launch_bounds__(32 * kBwdRows, 3)
    conv_bwd_kernel(ConvArgs<scalar_t> a, const scalar_t* grad_y, const scalar_t* grad_final,
                    scalar_t* grad_x, acc_t* partial) {
  __shared__ acc_t red[kBwdRows][kK + 1][32 * kVec];
  const int64_t g = blockIdx.x * 32 + threadIdx.x;
  const int64_t p0 = (static_cast<int64_t>(blockIdx.y) * kBwdRows + threadIdx.y) * kTile;
  const int64_t row = blockIdx.z;
  const bool owns = g < a.E / kVec && p0 < a.T;
  acc_t gw[kK][kVec], gb[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    gb[v] = 0;
#pragma unroll
    for (int i = 0; i < kK; ++i) gw[i][v] = 0;
  }
  if (owns) {
    const int64_t e0 = g * kVec, p1 = min(p0 + kTile, a.T);
    const int64_t active_end = min(a.T, p1 + a.W - 1);  // dz_t reaches the tile for t < p1 + W − 1
    Window<scalar_t, acc_t, kVec, kK> win;
    win.load_weights(a, e0);
    acc_t ring[kK][kVec];  // ring[i]: gradient of token t − kK + 1 + i
#pragma unroll
    for (int i = 0; i < kK; ++i)
#pragma unroll
      for (int v = 0; v < kVec; ++v) ring[i][v] = 0;
    Cursor c = cursor_at(a.cu, a.N, a.T, row, p0);
    for (int64_t t0 = p0; t0 < p1 + kK - 1; t0 += kAhead) {
      Pack<scalar_t, kVec> xs[kAhead], dys[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u)
        if (t0 + u < active_end) {
          xs[u] = dev::load_pack<scalar_t, kVec>(a.x_at(row, t0 + u, e0));
          dys[u] = dev::load_pack<scalar_t, kVec>(grad_y + (row * a.T + t0 + u) * a.E + e0);
        }
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        const int64_t t = t0 + u;
        if (t >= p1 + kK - 1) break;
#pragma unroll
        for (int i = 0; i < kK - 1; ++i)
#pragma unroll
          for (int v = 0; v < kVec; ++v) ring[i][v] = ring[i + 1][v];
#pragma unroll
        for (int v = 0; v < kVec; ++v) ring[kK - 1][v] = 0;
        if (t < active_end) {
          const bool start = advance(c, a.cu, a.N, a.T, t);
          win.step(a, c, row, t, e0, start || t == p0, xs[u]);
          const int64_t fj = t - (c.end - (a.W - 1));  // final-state column of token t
          const int64_t since_start = t - c.start;
#pragma unroll
          for (int v = 0; v < kVec; ++v) {
            const acc_t dz = silu_grad(win.z(v), to_acc(dys[u].v[v]));
            if (grad_final != nullptr && fj >= 0 && t < c.end)
              ring[kK - 1][v] += to_acc(grad_final[(c.n * a.E + e0 + v) * (a.W - 1) + fj]);
#pragma unroll
            for (int j = 0; j < kK; ++j)  // token t − j, same sequence only
              if (j <= since_start) ring[kK - 1 - j][v] += dz * win.w[kK - 1 - j][v];
            if (t < p1) {
              gb[v] += dz;
#pragma unroll
              for (int i = 0; i < kK; ++i) gw[i][v] += dz * win.xw[i][v];
            }
          }
        }
        const int64_t done = t - (kK - 1);  // complete: receives from tokens ≤ done + W − 1 ≤ t
        if (done >= p0) {
          Pack<scalar_t, kVec> out;
#pragma unroll
          for (int v = 0; v < kVec; ++v) out.v[v] = dev::from_acc<scalar_t>(ring[0][v]);
          dev::store_pack(grad_x + (row * a.T + done) * a.E + e0, out);
        }
      }
    }
  }
  // Block partial sums over the thread rows, in row order.
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    red[threadIdx.y][kK][threadIdx.x * kVec + v] = gb[v];
#pragma unroll
    for (int i = 0; i < kK; ++i) red[threadIdx.y][i][threadIdx.x * kVec + v] = gw[i][v];
  }
  __syncthreads();
  const int64_t part = static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y;
  const int64_t ch0 = static_cast<int64_t>(blockIdx.x) * 32 * kVec;
  for (int k = threadIdx.y * 32 + threadIdx.x; k < (a.W + 1) * 32 * kVec; k += 32 * kBwdRows) {
    const int i = k / (32 * kVec), ch = k % (32 * kVec);  // i = W: bias
    if (ch0 + ch >= a.E) continue;
    const int slot = i == a.W ? kK : i + (kK - a.W);
    acc_t acc = 0;
    for (int r = 0; r < kBwdRows; ++r) acc += red[r][slot][ch];
    partial[(part * (a.W + 1) + i) * a.E + ch0 + ch] = acc;
  }
}

// grad_weight (E, W), grad_bias (E): the partials summed over parts in a fixed order. Block of
// 32 × kReduceLanes threads for 32 consecutive (row i, channel e) outputs: lane l sums parts
// l, l + kReduceLanes, .. in order, then the lanes are added in lane order.
constexpr int kReduceLanes = 8;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(32 * kReduceLanes)
    conv_param_reduce_kernel(const acc_t* partial, int64_t n_parts, int64_t E, int W,
                             scalar_t* grad_weight, scalar_t* grad_bias) {
  __shared__ acc_t lanes[kReduceLanes][32];
  const int64_t idx = blockIdx.x * 32 + threadIdx.x;  // = i · E + e
  acc_t acc = 0;
  if (idx < (W + 1) * E)
    for (int64_t p = threadIdx.y; p < n_parts; p += kReduceLanes) acc += partial[p * (W + 1) * E + idx];
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || idx >= (W + 1) * E) return;
  acc = 0;
  for (int l = 0; l < kReduceLanes; ++l) acc += lanes[l][threadIdx.x];
  const int64_t i = idx / E, e = idx % E;
  if (i < W) grad_weight[e * W + i] = dev::from_acc<scalar_t>(acc);
  else grad_bias[e] = dev::from_acc<scalar_t>(acc);
}

// grad of the initial state (N, E, W − 1): ext position j is token τ = start − W + 1 + j, read
// by z_t for t in [start, min(end, τ + W)), plus the final state's gradient when j ≥ L.
template <typename scalar_t, typename acc_t>
__global__ void conv_grad_initial_kernel(ConvArgs<scalar_t> a, const scalar_t* grad_y,
                                         const scalar_t* grad_final, scalar_t* grad_initial) {
  const int64_t S = a.W - 1, numel = a.N * a.E * S;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < numel;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = idx % S, e = (idx / S) % a.E, n = idx / (S * a.E);
    const dev::SeqRange r = dev::seq_range(a.cu, n, a.T);
    const Cursor c{n, r.start, r.end};
    const int64_t row = a.cu == nullptr ? n : 0, tau = r.start - S + j;
    acc_t acc = 0;
    for (int64_t t = r.start; t < min(r.end, tau + a.W); ++t) {
      acc_t z = to_acc(a.bias[e]);
      for (int i = 0; i < a.W; ++i) {
        acc_t xv[1];
        load_ext<scalar_t, acc_t, 1>(xv, a, c, row, t - S + i, e);
        z += to_acc(a.weight[e * a.W + i]) * xv[0];
      }
      acc += silu_grad(z, to_acc(grad_y[(row * a.T + t) * a.E + e])) *
             to_acc(a.weight[e * a.W + (tau - t + S)]);
    }
    const int64_t L = r.end - r.start;
    if (grad_final != nullptr && j >= L) acc += to_acc(grad_final[(n * a.E + e) * S + j - L]);
    grad_initial[idx] = dev::from_acc<scalar_t>(acc);
  }
}

}  // namespace conv
}  // namespace cdssm
