// TORCH_LIBRARY_IMPL(cdssm, CUDA) of recurrent_delta_scan_{fwd,bwd}: argument checks, the
// backward's checkpoint workspace and launches on the current stream; the kernels are in
// recurrent_delta_scan.cuh. The forward allocates only its outputs (plus a validity flag with
// cu_seqlens) and never syncs with the host, so a decode step captures into a CUDA graph.
//
// cu_seqlens are validated on the device (no host sync): invalid offsets make every output NaN.
// head_dim D ≤ 256 (kR = 1, 2, 4 or 8 state entries per lane).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../cpu/delta_scan_cpu.h"
#include "device_scalar.h"
#include "recurrent_delta_scan.cuh"

namespace cdssm {
namespace {

constexpr int kMaxWarps = 16;    // warps per (sequence, head) block; pairs beyond loop
constexpr int kMaxSegment = 16;  // backward segment length (states held in shared memory)

void check_cuda_scan_inputs(const at::Tensor& q, const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(q.is_cuda(), "q: expected a CUDA tensor, got ", q.device());
  TORCH_CHECK(!cu_seqlens.has_value() || (cu_seqlens->device() == q.device() &&
                                          cu_seqlens->is_contiguous()),
              "cu_seqlens: expected a contiguous tensor on ", q.device());
  TORCH_CHECK(q.size(3) <= 256, "q: expected head_dim D <= 256 on CUDA, got ", q.size(3));
  TORCH_CHECK(q.size(2) <= 65535, "q: at most 65535 heads on CUDA, got ", q.size(2));
}

// Calls launch.template run<kR>() with kR · 32 >= D.
template <typename Launch>
void dispatch_rows(int64_t D, const Launch& launch) {
  if (D <= 32) launch.template run<1>();
  else if (D <= 64) launch.template run<2>();
  else if (D <= 128) launch.template run<4>();
  else launch.template run<8>();
}

template <typename scalar_t>
recurrent::ScanArgs<typename DeviceScalar<scalar_t>::type, at::opmath_type<scalar_t>> scan_args(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    const at::Tensor& log_decay, const at::Tensor& phase,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  using acc_t = at::opmath_type<scalar_t>;
  return {device_ptr<scalar_t>(q), device_ptr<scalar_t>(k), device_ptr<scalar_t>(v),
          device_ptr<scalar_t>(beta), log_decay.data_ptr<acc_t>(), phase.data_ptr<acc_t>(),
          initial_state.has_value() ? initial_state->data_ptr<acc_t>() : nullptr,
          cu_seqlens.has_value() ? cu_seqlens->data_ptr<int32_t>() : nullptr, q.size(1),
          static_cast<int>(q.size(2)), static_cast<int>(q.size(3)), static_cast<int>(v.size(3))};
}

template <typename scalar_t>
struct FwdLaunch {
  using dev_t = typename DeviceScalar<scalar_t>::type;
  using acc_t = at::opmath_type<scalar_t>;
  const recurrent::ScanArgs<dev_t, acc_t>& a;
  dim3 grid;
  int threads;
  at::Tensor &o, &final_state;
  cudaStream_t stream;
  template <int kR>
  void run() const {
    recurrent::recurrent_fwd_kernel<dev_t, acc_t, kR><<<grid, threads, 0, stream>>>(
        a, device_ptr<scalar_t>(o), final_state.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

template <typename scalar_t>
struct BwdLaunch {
  using dev_t = typename DeviceScalar<scalar_t>::type;
  using acc_t = at::opmath_type<scalar_t>;
  const recurrent::ScanArgs<dev_t, acc_t>& a;
  const recurrent::ScanGrads<dev_t, acc_t>& g;
  dim3 grid;
  int threads, segment;
  int64_t smem;
  cudaStream_t stream;
  template <int kR>
  void run() const {
    const auto kernel = recurrent::recurrent_bwd_kernel<dev_t, acc_t, kR>;
    if (smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    kernel<<<grid, threads, smem, stream>>>(a, g, segment);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<at::Tensor, at::Tensor> recurrent_delta_scan_fwd_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    const at::Tensor& log_decay, const at::Tensor& phase,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  check_scan_inputs(q, k, v, beta, log_decay, phase, cu_seqlens);
  check_state(initial_state, "initial_state", q, v, log_decay, cu_seqlens);
  check_cuda_scan_inputs(q, cu_seqlens);
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const int64_t N = cu_seqlens.has_value() ? cu_seqlens->numel() - 1 : B;
  at::Tensor o = at::empty({B, T, H, P, 2}, q.options());
  at::Tensor final_state = at::empty({N, H, 2 * P, D}, log_decay.options());
  if (N == 0 || H == 0 || P == 0) return {o, final_state};
  const std::optional<at::Tensor> valid = validate_cu_seqlens(cu_seqlens, T, stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "recurrent_delta_scan_fwd_cuda", [&] {
    const auto a = scan_args<scalar_t>(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens);
    const int threads = 32 * static_cast<int>(std::min<int64_t>(P, kMaxWarps));
    dispatch_rows(D, FwdLaunch<scalar_t>{a, dim3(static_cast<unsigned>(N), static_cast<unsigned>(H)),
                                         threads, o, final_state, stream});
  });
  fill_nan_if_invalid({&o, &final_state}, valid, stream);
  return {o, final_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
recurrent_delta_scan_bwd_cuda(const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_final_state,
                              const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& beta, const at::Tensor& log_decay,
                              const at::Tensor& phase, const std::optional<at::Tensor>& initial_state,
                              const std::optional<at::Tensor>& cu_seqlens) {
  check_scan_inputs(q, k, v, beta, log_decay, phase, cu_seqlens);
  check_state(initial_state, "initial_state", q, v, log_decay, cu_seqlens);
  check_state(grad_final_state, "grad_final_state", q, v, log_decay, cu_seqlens);
  check_cuda_scan_inputs(q, cu_seqlens);
  check_grad_o(grad_o, q, v);
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), P = v.size(3);
  const int64_t N = cu_seqlens.has_value() ? cu_seqlens->numel() - 1 : B;
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor dbeta = at::empty_like(beta), dld = at::empty_like(log_decay),
             dph = at::empty_like(phase);
  at::Tensor dinit = at::empty({N, H, 2 * P, D}, log_decay.options());
  if (N == 0 || H == 0) return {dq, dk, dv, dbeta, dld, dph, dinit};
  if (P == 0) {  // no pair: nothing flows back to q, k, β
    for (at::Tensor* t : {&dq, &dk, &dbeta}) t->zero_();
    return {dq, dk, dv, dbeta, dld, dph, dinit};
  }
  const std::optional<at::Tensor> valid = validate_cu_seqlens(cu_seqlens, T, stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "recurrent_delta_scan_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using BwdSmem = recurrent::BwdSmem<acc_t>;
    const int nwarps = static_cast<int>(std::min<int64_t>(P, kMaxWarps));
    const int64_t limit = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
    int S = kMaxSegment;
    while (S > 1 && BwdSmem::bytes(P, D, S, nwarps) > limit) --S;
    const int64_t smem = BwdSmem::bytes(P, D, S, nwarps);
    TORCH_CHECK(smem <= limit, "v: ", P, " state pairs of head_dim ", D,
                " need more shared memory than the device has (", smem, " > ", limit, " bytes)");
    const int64_t rows = cu_seqlens.has_value() ? T / S + N + 1 : N * ((T + S - 1) / S);
    at::Tensor checkpoints = at::empty({rows * H * P * D * 2}, log_decay.options());
    const auto a = scan_args<scalar_t>(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens);
    const recurrent::ScanGrads<typename DeviceScalar<scalar_t>::type, acc_t> g{
        device_ptr<scalar_t>(grad_o),
        grad_final_state.has_value() ? grad_final_state->data_ptr<acc_t>() : nullptr,
        device_ptr<scalar_t>(dq), device_ptr<scalar_t>(dk), device_ptr<scalar_t>(dv),
        device_ptr<scalar_t>(dbeta), dld.data_ptr<acc_t>(), dph.data_ptr<acc_t>(),
        dinit.data_ptr<acc_t>(), reinterpret_cast<dev::Cx<acc_t>*>(checkpoints.data_ptr<acc_t>())};
    dispatch_rows(D, BwdLaunch<scalar_t>{a, g, dim3(static_cast<unsigned>(N), static_cast<unsigned>(H)),
                                         32 * nwarps, S, smem, stream});
  });
  fill_nan_if_invalid({&dq, &dk, &dv, &dbeta, &dld, &dph, &dinit}, valid, stream);
  return {dq, dk, dv, dbeta, dld, dph, dinit};
}

}  // namespace

TORCH_LIBRARY_IMPL(cdssm, CUDA, m) {
  m.impl("recurrent_delta_scan_fwd", &recurrent_delta_scan_fwd_cuda);
  m.impl("recurrent_delta_scan_bwd", &recurrent_delta_scan_bwd_cuda);
}

}  // namespace cdssm
