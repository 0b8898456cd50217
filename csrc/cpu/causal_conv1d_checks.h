// Argument checks of causal_conv1d_silu_{fwd,bwd}, shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace cdssm {

// x's rows may be strided (a slice of a wider projection): element (b, t, e) of x sits at
// b·x_sb + t·x_st + e; every other (B, T, E) tensor of the ops is contiguous.
struct ConvShape {
  int64_t B, T, E, W, N, x_sb, x_st;
  int64_t state_width() const { return W - 1; }
  int64_t x_row(int64_t b, int64_t t) const { return b * x_sb + t * x_st; }
};

inline void check_same_device(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device(), name, ": expected a tensor on ", x.device(),
              " (x's device), got ", t.device());
}

inline void check_conv_state(const at::Tensor& state, const at::Tensor& x, const ConvShape& s,
                             const char* name) {
  check_same_device(state, x, name);
  TORCH_CHECK(state.sizes() == at::IntArrayRef({s.N, s.E, s.state_width()}), name,
              ": expected (N, E, W - 1) = ", at::IntArrayRef({s.N, s.E, s.state_width()}),
              ", got ", state.sizes());
  TORCH_CHECK(state.scalar_type() == x.scalar_type(), name, ": expected x's dtype ",
              x.scalar_type(), ", got ", state.scalar_type());
  TORCH_CHECK(state.is_contiguous(), name, ": expected a contiguous tensor");
}

// Shape, dtype, device and layout checks shared by both ops (the Python wrapper checks first
// with friendlier messages; these guard direct calls of torch.ops.cdssm.*). cu_seqlens contents
// are checked by make_spans.
inline ConvShape check_conv_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            const std::optional<at::Tensor>& cu_seqlens,
                            const std::optional<at::Tensor>& initial_conv_state) {
  TORCH_CHECK(x.dim() == 3, "x: expected (B, T, E), got ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
                  dtype == at::kHalf,
              "x: expected dtype float32, float64, bfloat16 or float16, got ", dtype);
  TORCH_CHECK(x.stride(2) == 1 || x.size(2) <= 1,
              "x: expected unit stride over channels (rows may be strided), got strides ",
              x.strides());
  ConvShape s{x.size(0), x.size(1), x.size(2), 0, x.size(0), x.stride(0), x.stride(1)};

  check_same_device(weight, x, "weight");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == s.E && weight.size(1) >= 1,
              "weight: expected (E, W) with E = ", s.E, " and W >= 1, got ", weight.sizes());
  s.W = weight.size(1);
  check_same_device(bias, x, "bias");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == s.E, "bias: expected (E,) with E = ", s.E,
              ", got ", bias.sizes());
  for (const auto& [t, name] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}}) {
    TORCH_CHECK(t->scalar_type() == dtype, name, ": expected x's dtype ", dtype, ", got ",
                t->scalar_type());
    TORCH_CHECK(t->is_contiguous(), name, ": expected a contiguous tensor");
  }

  if (cu_seqlens.has_value()) {
    check_same_device(*cu_seqlens, x, "cu_seqlens");
    TORCH_CHECK(cu_seqlens->dim() == 1 && cu_seqlens->scalar_type() == at::kInt,
                "cu_seqlens: expected a 1-D int32 tensor, got ", cu_seqlens->scalar_type(),
                " of shape ", cu_seqlens->sizes());
    TORCH_CHECK(s.B == 1, "x: expected batch size 1 with cu_seqlens, got ", s.B);
    s.N = cu_seqlens->numel() - 1;
  }
  if (initial_conv_state.has_value())
    check_conv_state(*initial_conv_state, x, s, "initial_conv_state");
  return s;
}

// grad_y (x's shape, dtype, device) and the optional grad_final_conv_state (N, E, W - 1).
inline void check_conv_grads(const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_final_conv_state,
                             const at::Tensor& x, const ConvShape& s) {
  check_same_device(grad_y, x, "grad_y");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "grad_y: expected x's shape ", x.sizes(), ", got ",
              grad_y.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), "grad_y: expected x's dtype ",
              x.scalar_type(), ", got ", grad_y.scalar_type());
  TORCH_CHECK(grad_y.is_contiguous(), "grad_y: expected a contiguous tensor");
  if (grad_final_conv_state.has_value())
    check_conv_state(*grad_final_conv_state, x, s, "grad_final_conv_state");
}

}  // namespace cdssm
