// Sequences of a (possibly packed) batch: the rows of B, or the spans of validated cu_seqlens.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace cdssm {

// One sequence: batch row b, tokens [start, start + len), state row n, and the
// row of its first chunk in the flattened boundary-state tensor.
struct Span {
  int64_t b, start, len, n, chunk_row;
};

// Spans from the batch (no cu_seqlens) or from validated cu_seqlens (B == 1).
inline std::vector<Span> make_spans(int64_t B, int64_t T, const std::optional<at::Tensor>& cu_seqlens,
                                    int64_t chunk_size) {
  std::vector<Span> spans;
  const int64_t n_chunks = chunk_size > 0 ? (T + chunk_size - 1) / chunk_size : 0;
  if (!cu_seqlens.has_value()) {
    // Each batch row owns n_chunks + 1 boundary rows: its chunk starts, then its final state.
    for (int64_t b = 0; b < B; ++b) spans.push_back({b, 0, T, b, b * (n_chunks + 1)});
    return spans;
  }
  const at::Tensor cu = cu_seqlens->to(at::kCPU, at::kLong).contiguous();
  const int64_t* c = cu.data_ptr<int64_t>();
  const int64_t N = cu.numel() - 1;
  TORCH_CHECK(N >= 1, "cu_seqlens: expected at least 2 offsets, got ", cu.numel());
  TORCH_CHECK(c[0] == 0, "cu_seqlens: expected cu_seqlens[0] == 0, got ", c[0]);
  TORCH_CHECK(c[N] == T, "cu_seqlens: expected cu_seqlens[-1] == T == ", T, ", got ", c[N]);
  int64_t row = 0;
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(c[n + 1] >= c[n], "cu_seqlens: expected non-decreasing offsets, got ", c[n],
                " then ", c[n + 1], " at index ", n);
    const int64_t len = c[n + 1] - c[n];
    spans.push_back({0, c[n], len, n, row});
    if (chunk_size > 0) row += (len + chunk_size - 1) / chunk_size;
  }
  return spans;
}

}  // namespace cdssm
