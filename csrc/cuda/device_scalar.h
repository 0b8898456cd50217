// torch scalar types -> the CUDA types of the kernels, and the cu_seqlens validity flag.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <optional>

#include "device_common.cuh"

namespace cdssm {

template <typename T>
struct DeviceScalar { using type = T; };
template <>
struct DeviceScalar<at::BFloat16> { using type = __nv_bfloat16; };
template <>
struct DeviceScalar<at::Half> { using type = __half; };

template <typename scalar_t>
typename DeviceScalar<scalar_t>::type* device_ptr(const at::Tensor& t) {
  return reinterpret_cast<typename DeviceScalar<scalar_t>::type*>(t.data_ptr());
}

// Device-side validity of cu_seqlens (a one-int tensor), or nothing without cu_seqlens.
inline std::optional<at::Tensor> validate_cu_seqlens(const std::optional<at::Tensor>& cu_seqlens,
                                                     int64_t T, cudaStream_t stream) {
  if (!cu_seqlens.has_value()) return std::nullopt;
  at::Tensor valid = at::empty({1}, cu_seqlens->options());
  dev::validate_cu_seqlens_kernel<<<1, 1024, 0, stream>>>(
      cu_seqlens->data_ptr<int32_t>(), cu_seqlens->numel() - 1, T, valid.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return valid;
}

// Every element of each output becomes NaN when the flag says cu_seqlens are invalid.
inline void fill_nan_if_invalid(std::initializer_list<at::Tensor*> outputs,
                                const std::optional<at::Tensor>& valid, cudaStream_t stream) {
  if (!valid.has_value()) return;
  for (at::Tensor* x : outputs) {
    const int64_t numel = x->numel();
    if (numel == 0) continue;
    const int blocks = static_cast<int>(std::min<int64_t>((numel + 255) / 256, 1024));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x->scalar_type(), "fill_nan", [&] {
      using dev_t = typename DeviceScalar<scalar_t>::type;
      dev::fill_nan_if_invalid_kernel<dev_t><<<blocks, 256, 0, stream>>>(
          device_ptr<scalar_t>(*x), numel, valid->data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
}

}  // namespace cdssm
