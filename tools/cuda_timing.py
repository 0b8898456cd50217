"""CUDA-event timing shared by the GPU benchmarks in tools/ (imported as a sibling module)."""

import statistics

import torch


def cuda_time_ms(fn, warmup: int, repeats: int, inner: int = 1) -> float:
    """Median over ``repeats`` of the device time of ``inner`` back-to-back calls of fn, per
    call, in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)
