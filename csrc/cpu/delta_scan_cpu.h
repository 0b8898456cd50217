// Shared pieces of the CPU delta-scan kernels: argument checks, flat indexing, complex math.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "spans.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace cdssm {

// A complex number with plain arithmetic (std::complex multiplies through the slow,
// NaN-recovering __mulsc3 path unless -ffast-math; the scans never need that recovery).
template <typename T>
struct Cx {
  T re, im;
  Cx() : re(0), im(0) {}
  Cx(T r, T i) : re(r), im(i) {}
  Cx operator+(Cx o) const { return {re + o.re, im + o.im}; }
  Cx operator-(Cx o) const { return {re - o.re, im - o.im}; }
  Cx operator*(Cx o) const { return {re * o.re - im * o.im, re * o.im + im * o.re}; }
  Cx operator*(T s) const { return {re * s, im * s}; }
  Cx& operator+=(Cx o) { re += o.re; im += o.im; return *this; }
  Cx& operator-=(Cx o) { re -= o.re; im -= o.im; return *this; }
  Cx conj() const { return {re, -im}; }
  T norm2() const { return re * re + im * im; }
};

template <typename T>
inline Cx<T> cexp(Cx<T> g) {
  T m = std::exp(g.re);
  return {m * std::cos(g.im), m * std::sin(g.im)};
}

// Re(conj(a) * b)
template <typename T>
inline T re_conj_mul(Cx<T> a, Cx<T> b) { return a.re * b.re + a.im * b.im; }

// The token stride of a (B, T, H, D) q or k: elements between consecutive (flattened b·T + t)
// token rows.
inline int64_t token_stride(const at::Tensor& t) { return t.size(1) > 1 ? t.stride(1) : t.stride(0); }

// q, k of the chunk scan may be token rows of a wider projection, read in place: unit stride
// over D, D over heads, and one stride between the flattened B·T token rows.
inline bool is_token_rows(const at::Tensor& t) {
  if (t.numel() == 0) return true;
  return (t.stride(3) == 1 || t.size(3) <= 1) && (t.stride(2) == t.size(3) || t.size(2) <= 1) &&
         (t.size(0) <= 1 || t.stride(0) == t.size(1) * token_stride(t));
}

// Shape and dtype checks shared by every scan kernel (the Python wrapper checks them first with
// friendlier messages; these guard direct calls of torch.ops.cdssm.*). q and k are contiguous,
// or token rows (is_token_rows) where the op reads them so (token_rows_qk, the chunk scan).
inline void check_scan_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& beta, const at::Tensor& log_decay,
                              const at::Tensor& phase, const std::optional<at::Tensor>& cu_seqlens,
                              bool token_rows_qk = false) {
  TORCH_CHECK(q.dim() == 4, "q: expected (B, T, H, D), got ", q.sizes());
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2);
  TORCH_CHECK(k.sizes() == q.sizes(), "k: expected ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK(v.dim() == 5 && v.size(0) == B && v.size(1) == T && v.size(2) == H && v.size(4) == 2,
              "v: expected (B, T, H, P, 2), got ", v.sizes());
  const int64_t P = v.size(3);
  TORCH_CHECK(beta.dim() == 3 && beta.size(0) == B && beta.size(1) == T && beta.size(2) == H,
              "beta: expected (B, T, H), got ", beta.sizes());
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const std::vector<int64_t> pair_shape{B, T, H, P};
  for (const auto* t : {&log_decay, &phase}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef(pair_shape), "log_decay/phase: expected (B, T, H, P) = ",
                at::IntArrayRef(pair_shape), ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == acc, "log_decay/phase: expected dtype ", acc, ", got ",
                t->scalar_type());
  }
  for (const auto* t : {&k, &v, &beta})
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "k/v/beta: expected q's dtype ",
                q.scalar_type(), ", got ", t->scalar_type());
  for (const auto* t : {&v, &beta, &log_decay, &phase})
    TORCH_CHECK(t->is_contiguous(), "scan inputs must be contiguous");
  for (const auto& [t, name] : {std::pair{&q, "q"}, std::pair{&k, "k"}})
    TORCH_CHECK(token_rows_qk ? is_token_rows(*t) : t->is_contiguous(), name,
                token_rows_qk ? ": expected unit stride over D, D over heads and one stride "
                                "between token rows, got strides "
                              : ": expected a contiguous tensor, got strides ",
                t->strides());
  for (const auto* t : {&k, &v, &beta, &log_decay, &phase})
    TORCH_CHECK(t->device() == q.device(), "scan inputs must be on q's device ", q.device());
  if (cu_seqlens.has_value()) {
    TORCH_CHECK(B == 1, "q: expected batch size 1 with cu_seqlens, got ", B);
    TORCH_CHECK(cu_seqlens->scalar_type() == at::kInt && cu_seqlens->dim() == 1 &&
                    cu_seqlens->numel() >= 2,
                "cu_seqlens: expected a 1-D int32 tensor of N + 1 >= 2 offsets");
  }
}

// A state-shaped tensor (N, H, 2P, D) in the recurrence dtype, named `name` in errors.
inline void check_state(const std::optional<at::Tensor>& state, const char* name,
                        const at::Tensor& q, const at::Tensor& v, const at::Tensor& log_decay,
                        const std::optional<at::Tensor>& cu_seqlens) {
  if (!state.has_value()) return;
  const int64_t N = cu_seqlens.has_value() ? cu_seqlens->numel() - 1 : q.size(0);
  const std::vector<int64_t> expected{N, q.size(2), 2 * v.size(3), q.size(3)};
  TORCH_CHECK(state->sizes() == at::IntArrayRef(expected), name, ": expected ",
              at::IntArrayRef(expected), ", got ", state->sizes());
  TORCH_CHECK(state->scalar_type() == log_decay.scalar_type() && state->is_contiguous() &&
                  state->device() == q.device(),
              name, ": expected a contiguous ", log_decay.scalar_type(), " tensor on ", q.device());
}

// grad_o of a scan backward: the shape of v, q's dtype and device, contiguous.
inline void check_grad_o(const at::Tensor& grad_o, const at::Tensor& q, const at::Tensor& v) {
  TORCH_CHECK(grad_o.sizes() == v.sizes() && grad_o.scalar_type() == q.scalar_type() &&
                  grad_o.is_contiguous() && grad_o.device() == q.device(),
              "grad_o: expected a contiguous ", q.scalar_type(), " tensor of shape ", v.sizes(),
              " on ", q.device());
}

// Rows of the boundary-state tensor (csrc/ops.cpp): B·(NC + 1), or NC + N with cu_seqlens.
inline int64_t boundary_rows(const at::Tensor& q, const std::optional<at::Tensor>& cu_seqlens,
                             int64_t chunk_size) {
  const int64_t NC = (q.size(1) + chunk_size - 1) / chunk_size;
  return cu_seqlens.has_value() ? NC + cu_seqlens->numel() - 1 : q.size(0) * (NC + 1);
}

// The boundary-state tensor of a chunk-scan forward: (B, NC + 1, H, 2P, D), the last row of each
// batch row holding the final state, or (NC + N, H, 2P, D) with cu_seqlens, where the rows no
// sequence uses (padding of the static bound) are zeroed so that the tensor is defined.
inline at::Tensor empty_boundary_states(const at::Tensor& q, const at::Tensor& v,
                                        const std::optional<at::Tensor>& cu_seqlens,
                                        int64_t chunk_size, const at::TensorOptions& opt) {
  const int64_t B = q.size(0), NC = (q.size(1) + chunk_size - 1) / chunk_size;
  const int64_t H = q.size(2), P = v.size(3), D = q.size(3);
  if (cu_seqlens.has_value()) return at::zeros({boundary_rows(q, cu_seqlens, chunk_size), H, 2 * P, D}, opt);
  return at::empty({B, NC + 1, H, 2 * P, D}, opt);
}

// boundary_states of a chunk-scan backward: what the forward returned for these inputs.
inline void check_boundary_states(const at::Tensor& boundary, const at::Tensor& q,
                                  const at::Tensor& v, const at::Tensor& log_decay,
                                  const std::optional<at::Tensor>& cu_seqlens, int64_t chunk_size) {
  const int64_t rows = boundary_rows(q, cu_seqlens, chunk_size);
  TORCH_CHECK(boundary.numel() == rows * q.size(2) * 2 * v.size(3) * q.size(3) &&
                  boundary.scalar_type() == log_decay.scalar_type() && boundary.is_contiguous() &&
                  boundary.device() == q.device(),
              "boundary_states: expected the forward's chunk-start states (", rows,
              " rows of (H, 2P, D)), got ", boundary.sizes());
}

// l2_norm_eps of the chunk scan: absent, or a finite eps > 0.
inline void check_l2_norm_eps(std::optional<double> eps) {
  TORCH_CHECK(!eps.has_value() || (*eps > 0 && std::isfinite(*eps)),
              "l2_norm_eps: expected a finite float > 0 or None, got ", eps.value_or(0));
}

// x̂ = x / √(Σ_d x_d² + eps) per (token, head) row, in fp32 (fp64 for fp64), returned contiguous
// in x's dtype (the model's l2_normalize).
inline at::Tensor l2_normalize_rows(const at::Tensor& x, double eps) {
  const at::Tensor xf = x.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  return (xf * (xf.square().sum(-1, true) + eps).rsqrt()).to(x.scalar_type()).contiguous();
}

// The gradient of the raw rows from that of the normalised ones:
// dx = r (dx̂ − x̂ (x̂·dx̂)),  x̂ = r x,  r = 1/√(Σ x² + eps)  (in fp32, fp64 for fp64).
inline at::Tensor l2_normalize_rows_backward(const at::Tensor& x, const at::Tensor& grad, double eps) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor xf = x.to(acc), gf = grad.to(acc);
  const at::Tensor r = (xf.square().sum(-1, true) + eps).rsqrt();
  const at::Tensor xh = xf * r;
  return (r * (gf - xh * (xh * gf).sum(-1, true))).to(x.scalar_type()).contiguous();
}

// Flat offsets into the contiguous canonical layouts.
struct ScanIndex {
  int64_t T, H, D, P;
  int64_t qk(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * D; }
  int64_t bh(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * H + h; }
  int64_t pair(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * P; }
  int64_t state(int64_t n, int64_t h) const { return (n * H + h) * 2 * P * D; }
};

}  // namespace cdssm
