// CPU kernels of causal_conv1d_silu_{fwd,bwd}: depthwise causal conv1d + SiLU, per sequence.
//
// Shapes: x, y (B, T, E) channels-last (x's rows may be strided: ConvShape::x_row); weight (E, W);
// bias (E); conv state (N, E, W - 1).
// Each sequence (a batch row, or a span of cu_seqlens) is read as its extended input
// ext = (initial state ++ x), W - 1 + L positions, so that
//   z_t = bias + sum_i weight[:, i] * ext[t + i],   y_t = SiLU(z_t) = z_t * sigmoid(z_t),
//   final state = ext[L .. L + W - 2].
// Work is split into blocks of kBlock channels; a block keeps its last W extended positions in
// a ring (position p in slot p % W) in the accumulation type, so each input is converted once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "causal_conv1d_checks.h"
#include "spans.h"

namespace cdssm {
namespace {

constexpr int64_t kBlock = 64;

int64_t n_channel_blocks(const ConvShape& s) { return (s.E + kBlock - 1) / kBlock; }

// Ring of the last W extended positions of one sequence and one channel block, plus the block's
// weights (transposed to (W, n_ch) so that the channel loop is contiguous) and bias.
template <typename scalar_t>
struct ChannelBlock {
  using acc_t = at::opmath_type<scalar_t>;

  const ConvShape& s;
  int64_t e0, n_ch;
  std::vector<acc_t> weight, bias, ring, z;

  ChannelBlock(const ConvShape& shape, int64_t block, const scalar_t* w, const scalar_t* b)
      : s(shape),
        e0(block * kBlock),
        n_ch(std::min(kBlock, shape.E - block * kBlock)),
        weight(shape.W * n_ch),
        bias(n_ch),
        ring(shape.W * n_ch),
        z(n_ch) {
    for (int64_t c = 0; c < n_ch; ++c) {
      bias[c] = static_cast<acc_t>(b[e0 + c]);
      for (int64_t i = 0; i < s.W; ++i)
        weight[i * n_ch + c] = static_cast<acc_t>(w[(e0 + c) * s.W + i]);
    }
  }

  int64_t slot(int64_t p) const { return p % s.W; }
  acc_t* row(int64_t p) { return ring.data() + slot(p) * n_ch; }
  int64_t state_index(int64_t n, int64_t c, int64_t j) const {
    return ((n * s.E) + e0 + c) * s.state_width() + j;
  }

  // ext[0 .. W - 2] of sequence n: its initial state row, or zeros.
  void start(const scalar_t* initial, int64_t n) {
    for (int64_t p = 0; p < s.state_width(); ++p) {
      acc_t* r = row(p);
      for (int64_t c = 0; c < n_ch; ++c)
        r[c] = initial ? static_cast<acc_t>(initial[state_index(n, c, p)]) : acc_t(0);
    }
  }

  // Reads x row t (= ext[t + W - 1]) and computes z_t for the block's channels.
  void step(const scalar_t* x_row, int64_t t) {
    acc_t* newest = row(t + s.W - 1);
    for (int64_t c = 0; c < n_ch; ++c) newest[c] = static_cast<acc_t>(x_row[e0 + c]);
    std::copy(bias.begin(), bias.end(), z.begin());
    for (int64_t i = 0; i < s.W; ++i) {
      const acc_t* w = weight.data() + i * n_ch;
      const acc_t* in = row(t + i);
      for (int64_t c = 0; c < n_ch; ++c) z[c] += w[c] * in[c];
    }
  }

  // Final state of sequence n (length len): ext[len .. len + W - 2], which the ring holds.
  void write_final(scalar_t* final_state, int64_t n, int64_t len) {
    for (int64_t j = 0; j < s.state_width(); ++j) {
      const acc_t* r = row(len + j);
      for (int64_t c = 0; c < n_ch; ++c)
        final_state[state_index(n, c, j)] = static_cast<scalar_t>(r[c]);
    }
  }
};

template <typename T>
inline T sigmoid(T z) {
  return T(1) / (T(1) + std::exp(-z));
}

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, work_per_item));
}

template <typename scalar_t>
void conv_fwd_kernel(const ConvShape& s, const std::vector<Span>& spans, const scalar_t* x,
                     const scalar_t* w, const scalar_t* b, const scalar_t* initial, scalar_t* y,
                     scalar_t* final_state) {
  const int64_t n_blocks = n_channel_blocks(s);
  const int64_t n_items = static_cast<int64_t>(spans.size()) * n_blocks;
  const int64_t work = (s.B * s.T / std::max<int64_t>(1, s.N) + s.W) * s.W * kBlock;
  at::parallel_for(0, n_items, grain_for(work), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const Span& sp = spans[item / n_blocks];
      ChannelBlock<scalar_t> blk(s, item % n_blocks, w, b);
      const int64_t base = sp.b * s.T + sp.start;
      blk.start(initial, sp.n);
      for (int64_t t = 0; t < sp.len; ++t) {
        blk.step(x + s.x_row(sp.b, sp.start + t), t);
        scalar_t* out = y + (base + t) * s.E + blk.e0;
        for (int64_t c = 0; c < blk.n_ch; ++c)
          out[c] = static_cast<scalar_t>(blk.z[c] * sigmoid(blk.z[c]));
      }
      blk.write_final(final_state, sp.n, sp.len);
    }
  });
}

// Gradient of one sequence for one channel block. The gradient of ext[p] collects
// dz_t * weight[:, p - t] from t = p - W + 1 .. p (and, for p >= len, the final state's gradient),
// so a second ring holds the W positions still receiving; position p is complete after step p.
template <typename scalar_t>
struct BlockGrad {
  using acc_t = at::opmath_type<scalar_t>;

  ChannelBlock<scalar_t>& blk;
  std::vector<acc_t> ring, dz, grad_weight, grad_bias;

  explicit BlockGrad(ChannelBlock<scalar_t>& block)
      : blk(block),
        ring(block.ring.size()),
        dz(block.n_ch),
        grad_weight(block.weight.size()),
        grad_bias(block.n_ch) {}

  acc_t* row(int64_t p) { return ring.data() + blk.slot(p) * blk.n_ch; }

  // A new sequence: no position has received a gradient yet.
  void start() { std::fill(ring.begin(), ring.end(), acc_t(0)); }

  // Accumulates dz_t into the parameter gradients and the receiving positions t .. t + W - 1.
  void step(const scalar_t* grad_y_row, int64_t t) {
    const int64_t n_ch = blk.n_ch;
    std::fill_n(row(t + blk.s.W - 1), n_ch, acc_t(0));
    for (int64_t c = 0; c < n_ch; ++c) {
      const acc_t z = blk.z[c], sig = sigmoid(z);
      dz[c] = static_cast<acc_t>(grad_y_row[blk.e0 + c]) * sig * (acc_t(1) + z * (acc_t(1) - sig));
      grad_bias[c] += dz[c];
    }
    for (int64_t i = 0; i < blk.s.W; ++i) {
      const acc_t* w = blk.weight.data() + i * n_ch;
      const acc_t* in = blk.row(t + i);
      acc_t* gw = grad_weight.data() + i * n_ch;
      acc_t* g = row(t + i);
      for (int64_t c = 0; c < n_ch; ++c) {
        gw[c] += dz[c] * in[c];
        g[c] += dz[c] * w[c];
      }
    }
  }

  // Writes the gradient of ext[p]: an initial-state entry (p < W - 1) or an x row.
  void emit(int64_t p, const Span& sp, const scalar_t* grad_final, scalar_t* grad_x,
            scalar_t* grad_initial) {
    const ConvShape& s = blk.s;
    acc_t* g = row(p);
    if (grad_final && p >= sp.len)
      for (int64_t c = 0; c < blk.n_ch; ++c)
        g[c] += static_cast<acc_t>(grad_final[blk.state_index(sp.n, c, p - sp.len)]);
    if (p < s.state_width()) {
      for (int64_t c = 0; c < blk.n_ch; ++c)
        grad_initial[blk.state_index(sp.n, c, p)] = static_cast<scalar_t>(g[c]);
    } else {
      scalar_t* out = grad_x + (sp.b * s.T + sp.start + p - s.state_width()) * s.E + blk.e0;
      for (int64_t c = 0; c < blk.n_ch; ++c) out[c] = static_cast<scalar_t>(g[c]);
    }
  }

  void write_params(scalar_t* gw, scalar_t* gb) const {
    for (int64_t c = 0; c < blk.n_ch; ++c) {
      gb[blk.e0 + c] = static_cast<scalar_t>(grad_bias[c]);
      for (int64_t i = 0; i < blk.s.W; ++i)
        gw[(blk.e0 + c) * blk.s.W + i] = static_cast<scalar_t>(grad_weight[i * blk.n_ch + c]);
    }
  }
};

// Parallel over channel blocks only, each looping over every sequence in order: the weight and
// bias gradients are reduced by one thread in a fixed order, so results are deterministic.
template <typename scalar_t>
void conv_bwd_kernel(const ConvShape& s, const std::vector<Span>& spans, const scalar_t* grad_y,
                     const scalar_t* grad_final, const scalar_t* x, const scalar_t* w,
                     const scalar_t* b, const scalar_t* initial, scalar_t* grad_x,
                     scalar_t* grad_w, scalar_t* grad_b, scalar_t* grad_initial) {
  const int64_t work = (s.B * s.T + s.N * s.W) * s.W * kBlock;
  at::parallel_for(0, n_channel_blocks(s), grain_for(work), [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      ChannelBlock<scalar_t> blk(s, block, w, b);
      BlockGrad<scalar_t> grad(blk);
      for (const Span& sp : spans) {
        const int64_t base = sp.b * s.T + sp.start;
        blk.start(initial, sp.n);
        grad.start();
        for (int64_t t = 0; t < sp.len; ++t) {
          blk.step(x + s.x_row(sp.b, sp.start + t), t);
          grad.step(grad_y + (base + t) * s.E, t);
          grad.emit(t, sp, grad_final, grad_x, grad_initial);
        }
        for (int64_t p = sp.len; p < sp.len + s.state_width(); ++p)
          grad.emit(p, sp, grad_final, grad_x, grad_initial);
      }
      grad.write_params(grad_w, grad_b);
    }
  });
}

template <typename scalar_t>
const scalar_t* optional_data(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_silu_fwd_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& cu_seqlens,
    const std::optional<at::Tensor>& initial_conv_state) {
  TORCH_CHECK(x.device().is_cpu(), "x: expected a CPU tensor, got ", x.device());
  const ConvShape s = check_conv_inputs(x, weight, bias, cu_seqlens, initial_conv_state);
  const std::vector<Span> spans = make_spans(s.B, s.T, cu_seqlens, /*chunk_size=*/0);
  at::Tensor y = at::empty(x.sizes(), x.options());  // contiguous, whatever x's row strides
  at::Tensor final_state = x.new_empty({s.N, s.E, s.state_width()});
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "causal_conv1d_silu_fwd", [&] {
    conv_fwd_kernel<scalar_t>(
        s, spans, x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
        optional_data<scalar_t>(initial_conv_state), y.data_ptr<scalar_t>(),
        final_state.data_ptr<scalar_t>());
  });
  return {y, final_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_silu_bwd_cpu(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_final_conv_state,
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& cu_seqlens,
    const std::optional<at::Tensor>& initial_conv_state) {
  TORCH_CHECK(x.device().is_cpu(), "x: expected a CPU tensor, got ", x.device());
  const ConvShape s = check_conv_inputs(x, weight, bias, cu_seqlens, initial_conv_state);
  check_conv_grads(grad_y, grad_final_conv_state, x, s);
  const std::vector<Span> spans = make_spans(s.B, s.T, cu_seqlens, /*chunk_size=*/0);

  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_w = at::empty_like(weight);
  at::Tensor grad_b = at::empty_like(bias);
  at::Tensor grad_initial = x.new_empty({s.N, s.E, s.state_width()});
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "causal_conv1d_silu_bwd", [&] {
    conv_bwd_kernel<scalar_t>(
        s, spans, grad_y.data_ptr<scalar_t>(), optional_data<scalar_t>(grad_final_conv_state),
        x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
        optional_data<scalar_t>(initial_conv_state), grad_x.data_ptr<scalar_t>(),
        grad_w.data_ptr<scalar_t>(), grad_b.data_ptr<scalar_t>(),
        grad_initial.data_ptr<scalar_t>());
  });
  return {grad_x, grad_w, grad_b, grad_initial};
}

}  // namespace

TORCH_LIBRARY_IMPL(cdssm, CPU, m) {
  m.impl("causal_conv1d_silu_fwd", &causal_conv1d_silu_fwd_cpu);
  m.impl("causal_conv1d_silu_bwd", &causal_conv1d_silu_bwd_cpu);
}

}  // namespace cdssm
