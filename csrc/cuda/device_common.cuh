// Device helpers shared by the conv and recurrent-scan CUDA kernels; free of torch headers so that
// each kernel header compiles alone (nvcc -x cu -c file.cuh).
//
// cu_seqlens are validated on the device (no host sync): validate_cu_seqlens_kernel sets a flag,
// the kernels clamp every offset into [0, T] so that invalid offsets stay in bounds, and
// fill_nan_if_invalid_kernel then overwrites each output with NaN.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace cdssm {
namespace dev {

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

// kVec consecutive elements moved as one access (16 bytes when kVec · sizeof(T) == 16).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <typename T, int kVec>
__device__ inline Pack<T, kVec> load_pack(const T* p) { return *reinterpret_cast<const Pack<T, kVec>*>(p); }
template <typename T, int kVec>
__device__ inline void store_pack(T* p, const Pack<T, kVec>& x) { *reinterpret_cast<Pack<T, kVec>*>(p) = x; }

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

// Re(conj(a) · b)
template <typename T>
__device__ inline T re_conj_mul(Cx<T> a, Cx<T> b) { return a.re * b.re + a.im * b.im; }

// e^{g}: the decay z = e^{log_decay + i·phase}.
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

template <typename T>
__device__ inline T warp_sum(T x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Token range [start, end) of sequence n within its row: the whole row n (cu == nullptr), else
// [cu[n], cu[n + 1]) of row 0 clamped into [0, T] and to a non-negative length.
struct SeqRange {
  int64_t start, end;
};
__device__ inline SeqRange seq_range(const int32_t* cu, int64_t n, int64_t T) {
  if (cu == nullptr) return {0, T};
  const int64_t s = min(max(static_cast<int64_t>(cu[n]), int64_t(0)), T);
  const int64_t e = min(max(static_cast<int64_t>(cu[n + 1]), s), T);
  return {s, e};
}

// The sequence holding token t of a packed row: the largest n < N with cu[n] <= t (so empty
// sequences starting at t are skipped).
__device__ inline int64_t seq_of_token(const int32_t* cu, int64_t N, int64_t t) {
  int64_t lo = 0, hi = N - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// *valid = 1 iff cu[0] == 0, cu[N] == T and cu is non-decreasing. One block. (static: this
// header is included by several translation units.)
static __global__ void __launch_bounds__(1024) validate_cu_seqlens_kernel(const int32_t* cu, int64_t N,
                                                                   int64_t T, int* valid) {
  int ok = 1;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x)
    ok &= (cu[n + 1] >= cu[n]) && (n > 0 || cu[0] == 0) && (n < N - 1 || cu[N] == T);
  ok = __syncthreads_and(ok);
  if (threadIdx.x == 0) *valid = ok;
}

template <typename T>
__global__ void fill_nan_if_invalid_kernel(T* x, int64_t numel, const int* valid) {
  if (*valid) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_acc<T>(static_cast<float>(NAN));
}

}  // namespace dev
}  // namespace cdssm
