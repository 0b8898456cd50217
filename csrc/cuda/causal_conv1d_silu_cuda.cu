// TORCH_LIBRARY_IMPL(cdssm, CUDA) of causal_conv1d_silu_{fwd,bwd}: argument checks, workspace and
// launches on the current stream; the kernels are in causal_conv1d_silu.cuh.
//
// cu_seqlens are validated on the device (no host sync): invalid offsets make every output NaN.
// Widths W ≤ 8 (a register window of kK = 4 or 8 taps).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../cpu/causal_conv1d_checks.h"
#include "causal_conv1d_silu.cuh"
#include "device_scalar.h"

namespace cdssm {
namespace {

constexpr int kMaxWidth = 8;

ConvShape check_cuda_conv_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const std::optional<at::Tensor>& cu_seqlens,
                                 const std::optional<at::Tensor>& initial_conv_state) {
  TORCH_CHECK(x.is_cuda(), "x: expected a CUDA tensor, got ", x.device());
  const ConvShape s = check_conv_inputs(x, weight, bias, cu_seqlens, initial_conv_state);
  TORCH_CHECK(s.W <= kMaxWidth, "weight: expected width W <= ", kMaxWidth, " on CUDA, got ", s.W);
  TORCH_CHECK(!cu_seqlens.has_value() || cu_seqlens->is_contiguous(),
              "cu_seqlens: expected a contiguous tensor");
  TORCH_CHECK(s.B <= 65535, "x: at most 65535 rows on CUDA, got ", s.B);
  return s;
}

template <typename scalar_t>
conv::ConvArgs<typename DeviceScalar<scalar_t>::type> conv_args(
    const ConvShape& s, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& cu_seqlens, const std::optional<at::Tensor>& initial) {
  return {device_ptr<scalar_t>(x), device_ptr<scalar_t>(weight), device_ptr<scalar_t>(bias),
          initial.has_value() ? device_ptr<scalar_t>(*initial) : nullptr,
          cu_seqlens.has_value() ? cu_seqlens->data_ptr<int32_t>() : nullptr,
          s.B, s.T, s.E, s.N, s.x_sb, s.x_st, static_cast<int>(s.W)};
}

// kVec channels per access (kBytes per access) when E, x's row strides and every pointer allow
// it, else 1.
template <typename scalar_t, int kBytes>
bool can_vectorize(const ConvShape& s, std::initializer_list<const at::Tensor*> tensors) {
  constexpr int64_t vec = kBytes / sizeof(scalar_t);
  if (s.E % vec != 0 || s.x_sb % vec != 0 || s.x_st % vec != 0) return false;
  for (const at::Tensor* t : tensors)
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % kBytes != 0) return false;
  return true;
}

// Calls launch.template run<kVec, kK>() for the vector width and window the shape allows.
template <typename scalar_t, int kBytes, typename Launch>
void dispatch_window(bool vectorize, int64_t W, const Launch& launch) {
  constexpr int kVec = kBytes / sizeof(scalar_t);
  if (vectorize) {
    if (W <= 4) launch.template run<kVec, 4>(); else launch.template run<kVec, 8>();
  } else {
    if (W <= 4) launch.template run<1, 4>(); else launch.template run<1, 8>();
  }
}

int elementwise_blocks(int64_t numel) {
  return static_cast<int>(std::min<int64_t>((numel + 255) / 256, 4096));
}

dim3 tile_grid(const ConvShape& s, int64_t vec, int rows) {
  const int64_t groups = s.E / vec, tiles = (s.T + conv::kTile - 1) / conv::kTile;
  const int64_t gy = (tiles + rows - 1) / rows;
  TORCH_CHECK(gy <= 65535, "x: sequence length ", s.T, " too long for the CUDA conv kernel");
  return dim3(static_cast<unsigned>((groups + 31) / 32), static_cast<unsigned>(gy),
              static_cast<unsigned>(s.B));
}

template <typename scalar_t>
struct FwdLaunch {
  using dev_t = typename DeviceScalar<scalar_t>::type;
  using acc_t = at::opmath_type<scalar_t>;
  const ConvShape& s;
  const conv::ConvArgs<dev_t>& a;
  dev_t* y;
  cudaStream_t stream;
  template <int kVec, int kK>
  void run() const {
    conv::conv_fwd_kernel<dev_t, acc_t, kVec, kK>
        <<<tile_grid(s, kVec, conv::kFwdRows), dim3(32, conv::kFwdRows), 0, stream>>>(a, y);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// The tile kernel, then the weight and bias gradients from its per-block partial sums.
template <typename scalar_t>
struct BwdLaunch {
  using dev_t = typename DeviceScalar<scalar_t>::type;
  using acc_t = at::opmath_type<scalar_t>;
  const ConvShape& s;
  const conv::ConvArgs<dev_t>& a;
  const dev_t *grad_y, *grad_final;
  at::Tensor &grad_x, &grad_w, &grad_b;
  cudaStream_t stream;
  template <int kVec, int kK>
  void run() const {
    const dim3 grid = tile_grid(s, kVec, conv::kBwdRows);
    const int64_t n_parts = s.B * s.T == 0 ? 0 : static_cast<int64_t>(grid.y) * grid.z;
    at::Tensor partial = at::empty({n_parts * (s.W + 1) * s.E},
                                   grad_x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    if (n_parts > 0) {
      conv::conv_bwd_kernel<dev_t, acc_t, kVec, kK><<<grid, dim3(32, conv::kBwdRows), 0, stream>>>(
          a, grad_y, grad_final, device_ptr<scalar_t>(grad_x), partial.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const unsigned reduce_blocks = static_cast<unsigned>(((s.W + 1) * s.E + 31) / 32);
    conv::conv_param_reduce_kernel<dev_t, acc_t>
        <<<reduce_blocks, dim3(32, conv::kReduceLanes), 0, stream>>>(
        partial.data_ptr<acc_t>(), n_parts, s.E, static_cast<int>(s.W), device_ptr<scalar_t>(grad_w),
        device_ptr<scalar_t>(grad_b));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<at::Tensor, at::Tensor> causal_conv1d_silu_fwd_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& cu_seqlens,
    const std::optional<at::Tensor>& initial_conv_state) {
  const ConvShape s = check_cuda_conv_inputs(x, weight, bias, cu_seqlens, initial_conv_state);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor y = at::empty(x.sizes(), x.options());  // contiguous, whatever x's row strides
  at::Tensor final_state = x.new_empty({s.N, s.E, s.state_width()});
  if (s.E == 0) return {y, final_state};
  const std::optional<at::Tensor> valid = validate_cu_seqlens(cu_seqlens, s.T, stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "causal_conv1d_silu_fwd_cuda", [&] {
    using dev_t = typename DeviceScalar<scalar_t>::type;
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = conv_args<scalar_t>(s, x, weight, bias, cu_seqlens, initial_conv_state);
    const bool vectorize = can_vectorize<scalar_t, 16>(s, {&x, &y});
    if (s.B * s.T > 0)
      dispatch_window<scalar_t, 16>(vectorize, s.W,
                                    FwdLaunch<scalar_t>{s, a, device_ptr<scalar_t>(y), stream});
    if (final_state.numel() > 0) {
      conv::conv_final_state_kernel<dev_t, acc_t><<<elementwise_blocks(final_state.numel()), 256, 0, stream>>>(
          a, device_ptr<scalar_t>(final_state));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  fill_nan_if_invalid({&y, &final_state}, valid, stream);
  return {y, final_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_silu_bwd_cuda(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_final_conv_state,
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& cu_seqlens,
    const std::optional<at::Tensor>& initial_conv_state) {
  const ConvShape s = check_cuda_conv_inputs(x, weight, bias, cu_seqlens, initial_conv_state);
  check_conv_grads(grad_y, grad_final_conv_state, x, s);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_w = at::empty_like(weight);
  at::Tensor grad_b = at::empty_like(bias);
  at::Tensor grad_initial = x.new_empty({s.N, s.E, s.state_width()});
  if (s.E == 0) return {grad_x, grad_w, grad_b, grad_initial};
  const std::optional<at::Tensor> valid = validate_cu_seqlens(cu_seqlens, s.T, stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "causal_conv1d_silu_bwd_cuda", [&] {
    using dev_t = typename DeviceScalar<scalar_t>::type;
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = conv_args<scalar_t>(s, x, weight, bias, cu_seqlens, initial_conv_state);
    const dev_t* gy = device_ptr<scalar_t>(grad_y);
    const dev_t* gf = grad_final_conv_state.has_value() ? device_ptr<scalar_t>(*grad_final_conv_state) : nullptr;
    // 16-byte accesses for 4- and 8-byte types; 8-byte ones (4 channels) for 2-byte types keep
    // the window, the gradient ring and the weight gradients in registers.
    constexpr int kBytes = sizeof(scalar_t) >= 4 ? 16 : 8;
    const bool vectorize = can_vectorize<scalar_t, kBytes>(s, {&x, &grad_y, &grad_x});
    dispatch_window<scalar_t, kBytes>(
        vectorize, s.W, BwdLaunch<scalar_t>{s, a, gy, gf, grad_x, grad_w, grad_b, stream});
    if (grad_initial.numel() > 0) {
      conv::conv_grad_initial_kernel<dev_t, acc_t><<<elementwise_blocks(grad_initial.numel()), 256, 0, stream>>>(
          a, gy, gf, device_ptr<scalar_t>(grad_initial));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  fill_nan_if_invalid({&grad_x, &grad_w, &grad_b, &grad_initial}, valid, stream);
  return {grad_x, grad_w, grad_b, grad_initial};
}

}  // namespace

TORCH_LIBRARY_IMPL(cdssm, CUDA, m) {
  m.impl("causal_conv1d_silu_fwd", &causal_conv1d_silu_fwd_cuda);
  m.impl("causal_conv1d_silu_bwd", &causal_conv1d_silu_bwd_cuda);
}

}  // namespace cdssm
