"""tools/profile_block_gpu.py's kernel groups, on kernel names as torch.profiler reports them on an H100."""

import pytest

KERNELS = [  # (kernel name, group)
    ("void cdssm::cuda::chunk_bwd_kernel<__nv_bfloat16, float, true, 64, 64>(cdssm::cuda::Inputs<__nv_bflo", "scan"),
    ("void cdssm::cuda::chunk_prepare_kernel<__nv_bfloat16, float, true, 64, 64>(cdssm::cuda::Inputs<__nv_", "scan"),
    ("void cdssm::cuda::segment_maps_kernel<__nv_bfloat16, float, false, true, 64>(cdssm::cuda::Sequences,", "scan"),
    ("void cdssm::cuda::segment_chain_kernel<float, true, 64>(cdssm::cuda::Sequences, cdssm::cuda::ChainArg", "scan"),
    ("void cdssm::cuda::state_chain_kernel<float, false, true, 64>(cdssm::cuda::Sequences, cdssm::cuda::Ch", "scan"),
    ("void cdssm::conv::conv_bwd_kernel<__nv_bfloat16, float, 4, 4>(cdssm::conv::ConvArgs<__nv_bfloat16>, ", "conv"),
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "matmul"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, false, f", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1_cga1x1x1_kernel0_",
     "attention"),
    ("triton_red_fused__to_copy_cat_mul_silu_silu_backward_split_sum_view_39", "fused elementwise"),
    # Inductor names its kernels after the ops they fuse, ours included: still Inductor's work
    ("triton_poi_fused__to_copy_add_causal_conv1d_silu_bwd_mul_split_view_zeros_31", "fused elementwise"),
    ("triton_poi_fused__to_copy__unsafe_view_abs_add_atan2_bitwise_and_chunk_delta_scan_bwd_clamp_max_clam",
     "fused elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<cha", "other"),
    ("Memset (Device)", "other"),
]


@pytest.mark.parametrize("name,group", KERNELS)
def test_kernel_groups(name, group, tool_module):
    assert tool_module("profile_block_gpu").group_of(name) == group
