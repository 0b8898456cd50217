// The op contract: every cdssm op schema, in one place.
//
// Canonical shapes (B batch, T tokens, H heads, D head_dim, P state pairs, N sequences,
// NC = ceil(T / chunk_size), E channels, W conv width):
//   q, k          (B, T, H, D)        unit rows; activation dtype (bf16 / fp16 / fp32 / fp64);
//                                     the chunk scan also takes token rows of a wider
//                                     projection (unit stride over D, D over heads, one token
//                                     stride) and, with l2_norm_eps, raw rows that it normalises
//                                     itself, x̂ = x / √(Σ x² + eps), returning the raw rows'
//                                     gradients
//   v             (B, T, H, P, 2)     complex value per pair, (re, im)
//   beta          (B, T, H)           write strength in (0, 1)
//   log_decay     (B, T, H, P)        log|z| <= 0, fp32 (fp64 with fp64 inputs)
//   phase         (B, T, H, P)        arg z
//   state         (N, H, 2P, D)       fp32 (fp64 with fp64 inputs); pair p in rows 2p, 2p+1
//   cu_seqlens    (N + 1,) int32      packed sequences; then B == 1
//   boundary      (B, NC + 1, H, 2P, D)  state at every chunk start, then the final state (the
//                                        extra row keeps the dimension provably > 1 for any
//                                        T >= 1, so a dynamic T never guards on NC == 1);
//                 (NC + N, H, 2P, D)     with cu_seqlens: chunk starts of each sequence in
//                                        order, padded to the static bound on their count
//   state_energy  (N, H)              mean over the sequence's chunk ends of ||S||_F^2
// Output shapes follow from input shapes alone, so fake tensors, compile and export see them.
#include <torch/library.h>

TORCH_LIBRARY(cdssm, m) {
  m.set_python_module("cdssm.meta_kernels");

  m.def(
      "chunk_delta_scan_fwd(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor log_decay, "
      "Tensor phase, Tensor? initial_state, Tensor? cu_seqlens, int chunk_size, "
      "float? l2_norm_eps=None) -> "
      "(Tensor o, Tensor final_state, Tensor boundary_states, Tensor state_energy)");
  m.def(
      "chunk_delta_scan_bwd(Tensor grad_o, Tensor? grad_final_state, Tensor q, Tensor k, "
      "Tensor v, Tensor beta, Tensor log_decay, Tensor phase, Tensor boundary_states, "
      "Tensor? cu_seqlens, int chunk_size, float? l2_norm_eps=None) -> (Tensor grad_q, "
      "Tensor grad_k, Tensor grad_v, Tensor grad_beta, Tensor grad_log_decay, "
      "Tensor grad_phase, Tensor grad_initial_state)");

  m.def(
      "recurrent_delta_scan_fwd(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor log_decay, "
      "Tensor phase, Tensor? initial_state, Tensor? cu_seqlens) -> "
      "(Tensor o, Tensor final_state)");
  m.def(
      "recurrent_delta_scan_bwd(Tensor grad_o, Tensor? grad_final_state, Tensor q, Tensor k, "
      "Tensor v, Tensor beta, Tensor log_decay, Tensor phase, Tensor? initial_state, "
      "Tensor? cu_seqlens) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v, "
      "Tensor grad_beta, Tensor grad_log_decay, Tensor grad_phase, "
      "Tensor grad_initial_state)");

  // x (B, T, E), unit channel stride, rows may be strided (read in place from a slice of the
  // input projection); y, grad_y, grad_x contiguous; weight (E, W); bias (E); conv state
  // (N, E, W - 1): the last W - 1 inputs before the sequence (initial) or at its end (final),
  // oldest first.
  m.def(
      "causal_conv1d_silu_fwd(Tensor x, Tensor weight, Tensor bias, Tensor? cu_seqlens, "
      "Tensor? initial_conv_state) -> (Tensor y, Tensor final_conv_state)");
  m.def(
      "causal_conv1d_silu_bwd(Tensor grad_y, Tensor? grad_final_conv_state, Tensor x, "
      "Tensor weight, Tensor bias, Tensor? cu_seqlens, Tensor? initial_conv_state) -> "
      "(Tensor grad_x, Tensor grad_weight, Tensor grad_bias, Tensor grad_initial_conv_state)");
}
