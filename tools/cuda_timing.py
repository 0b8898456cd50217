"""CUDA-event timing, and the scan steps it times, shared by the GPU benchmarks in tools/ (imported
as a sibling module)."""

import contextlib
import fcntl
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


def forward_and_step(run, grad_o):
    """(fwd, step) of a scan call run() ↦ (o, final_state): fwd runs it under no_grad; step runs
    it and backpropagates grad_o into o and ones into the final state (so the state's gradient
    path runs too) to every input that requires grad."""
    def fwd():
        with torch.no_grad():
            run()

    def step():
        o, final = run()
        torch.autograd.backward([o, final], [grad_o, torch.ones_like(final)])

    return fwd, step


def peak_mib(fn):
    """Peak allocated memory of fn() above what was allocated before, MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def kernel_times(step) -> list:
    """[(kernel name, device ms, launches)] of one step() after an untimed one (torch.profiler),
    the largest first."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    rows = [(e.key, e.self_device_time_total / 1e3, e.count) for e in prof.key_averages()
            if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])


def matmul_peak_tflops() -> float:
    """Measured bf16 rate of an 8192³ matrix product on random data, TFLOP/s."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = cuda_time_ms(lambda: a @ b, 3, 10)
    return 2 * 8192 ** 3 / ms / 1e9


def copy_bandwidth_gbs() -> float:
    """Measured device-memory rate of a 1 GiB device-to-device copy, counting the bytes read and
    those written, GB/s (the rate a memory-bound kernel can reach)."""
    a = torch.empty(2 ** 30, device="cuda", dtype=torch.uint8)
    b = torch.empty_like(a)
    ms = cuda_time_ms(lambda: b.copy_(a), 3, 10)
    return 2 * a.numel() / ms / 1e6


@contextlib.contextmanager
def gpu_lock(path):
    """Exclusive use of the GPU among benchmark processes sharing the lock file ``path`` (None:
    no lock). Several benchmarks can then compile at once (CPU work) and take turns for the
    timed sections."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
