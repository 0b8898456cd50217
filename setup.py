"""Builds cdssm/_C.abi3.so, the Python-free op library (schemas + kernels).

csrc/ops.cpp and csrc/cpu/*.cpp are always compiled. csrc/cuda/*.cu are compiled only when the
installed torch is a CUDA build (``torch.version.cuda``) and a CUDA toolkit is found
(``CUDA_HOME``) — a GPU is not needed to build them. The library links only libtorch (no
libtorch_python, no PyInit), so ``torch.ops.load_library`` and a C++ AOTInductor runner can both
load it.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extension():
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp-simd", "-fvisibility=hidden", "-DPy_LIMITED_API=0x030a0000"]
    sources = _sources("csrc/ops.cpp") + _sources("csrc/cpu/*.cpp")
    cuda_sources = _sources("csrc/cuda/*.cu")
    build_cuda = (
        torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and bool(cuda_sources)
        and os.environ.get("CDSSM_NO_CUDA", "0") != "1"
    )
    if build_cuda:
        return cpp_extension.CUDAExtension(
            "cdssm._C",
            sources + cuda_sources,
            py_limited_api=True,
            extra_compile_args={
                "cxx": cxx_flags + ["-DCDSSM_WITH_CUDA"],
                "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "-DCDSSM_WITH_CUDA"],
            },
        )
    return cpp_extension.CppExtension(
        "cdssm._C", sources, py_limited_api=True, extra_compile_args={"cxx": cxx_flags}
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
