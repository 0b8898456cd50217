"""``cdssm export``: a CD-SSM as two AOTInductor packages, prefill and decode, plus a manifest.

Two programs, each ``torch.export``-ed with dynamic sizes and compiled by
``torch._inductor.aoti_compile_and_package`` for one device:

  prefill.pt2  (input_ids (1, T) int64, cu_seqlens (N + 1,) int32)
               → (logits (N, V) after each packed prompt's last token, state)
               dynamic N ≥ 1 and T ≥ 2; the state starts at zero inside (``init_state(N)``).
  decode.pt2   (tokens (N,) int64, state) → (logits (N, V), next state); dynamic N ≥ 1.

The state is a ``CDSSMState``: conv (n_layers, N, E, W − 1) in the model dtype, ssm
(n_layers, N, H, 2P, D) fp32. A one-token input takes the recurrent (T = 1) path of the blocks,
so prefill starts at T = 2; a one-token prompt is a decode step from the zero state instead
(``PackagedLM``). Sampling is not in the packages: it stays with the caller (Python, C++).

``manifest.json`` says what the packages hold: the model config, dtype, device, the file names
and the zero state's shapes (batch dimension 1). Every file is written to a temporary name and
renamed; the manifest comes last, so a directory with a manifest is complete.
"""

import os

import torch
from torch.export import Dim

from ..files import atomic_write, write_json
from ..models.cdssm import CDSSMForCausalLM
from ..training.precision import resolve_device
from .programs import DecodeProgram, PrefillProgram

MANIFEST_NAME = "manifest.json"
PROGRAM_FILES = {"prefill": "prefill.pt2", "decode": "decode.pt2"}
FORMAT = "cdssm-aoti-1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def export_programs(model: CDSSMForCausalLM) -> dict:
    """``torch.export`` of both programs of ``model`` (on its device and in its dtype):
    {"prefill": ExportedProgram, "decode": ExportedProgram}."""
    device = model.embed.weight.device
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (1, 70), generator=g).to(device)  # spans two 64-token chunks
    cu_seqlens = torch.tensor([0, 30, 70], dtype=torch.int32, device=device)
    tokens = torch.randint(0, V, (2,), generator=g).to(device)
    batch = Dim("batch", min=1)
    # Size-oblivious reasoning: a size seen as 2 while tracing stays valid for 1 (no 0/1
    # specialisation of the number of sequences).
    with torch.no_grad(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
        prefill = torch.export.export(
            PrefillProgram(model), (ids, cu_seqlens),
            dynamic_shapes={"input_ids": {1: Dim("tokens", min=2)},
                            "cu_seqlens": {0: Dim("offsets", min=2)}})
        state = model.init_state(2, device=device)
        decode = torch.export.export(
            DecodeProgram(model), (tokens, state),
            dynamic_shapes={"tokens": {0: batch},
                            "state": type(state)(*({1: batch} for _ in state))})
    return {"prefill": prefill, "decode": decode}


def _check_model(model) -> None:
    if not isinstance(model, CDSSMForCausalLM):
        raise ValueError(f"model: export needs a CD-SSM (CDSSMForCausalLM: a fixed-size decode "
                         f"state), got {type(model).__name__}")


def export_packages(model: CDSSMForCausalLM, out_dir: str, device: str = "cpu",
                    dtype: str = "float32", progress: bool = True) -> dict:
    """Writes ``prefill.pt2``, ``decode.pt2`` and ``manifest.json`` into ``out_dir`` for
    ``device`` ("cpu" or "cuda") and ``dtype`` ("float32" or "bfloat16"); returns the manifest.

    The model is copied to the device and dtype (the scan state stays fp32) and put in eval
    mode; its weights (and state-energy EMA) become constants of the packages.
    """
    from tqdm import tqdm

    _check_model(model)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    resolve_device(device)  # ValueError for cuda without a CUDA device
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    os.makedirs(out_dir, exist_ok=True)
    model = _copy_to(model, device, DTYPES[dtype])
    with tqdm(total=2 * len(PROGRAM_FILES), desc="export", unit="step",
              disable=not progress) as bar:
        bar.set_postfix_str("torch.export")
        programs = export_programs(model)
        bar.update(len(programs))
        for name, program in programs.items():
            bar.set_postfix_str(f"AOTInductor: {PROGRAM_FILES[name]}")
            atomic_write(os.path.join(out_dir, PROGRAM_FILES[name]),
                         lambda tmp: torch._inductor.aoti_compile_and_package(program,
                                                                              package_path=tmp),
                         suffix=".pt2")
            bar.update()
    zero = model.init_state(1)
    manifest = {
        "format": FORMAT, "arch": model.arch, "config": model.config.to_dict(),
        "dtype": dtype, "device": device, "programs": dict(PROGRAM_FILES),
        "state": {name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                  for name, t in zip(type(zero)._fields, zero)},
        "torch": torch.__version__,
    }
    write_json(os.path.join(out_dir, MANIFEST_NAME), manifest)
    return manifest


def _copy_to(model: CDSSMForCausalLM, device: str, dtype: torch.dtype) -> CDSSMForCausalLM:
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(device=device, dtype=dtype).eval()
