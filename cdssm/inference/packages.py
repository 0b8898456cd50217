"""``PackagedLM``: generation from the AOTInductor packages of ``cdssm export``, no model code.

A runner for ``cdssm.inference.generate.stream`` (``prefill`` / ``step``, ``vocab_size``,
``device``) over ``prefill.pt2`` and ``decode.pt2``; see ``export.py`` for their signatures.
Importing cdssm (done by this module) registers the custom ops and the ``CDSSMState`` pytree
node the packages name, which is all a fresh process needs before loading them.
"""

import json
import os

import torch

from ..models.cdssm import CDSSMState
from .export import FORMAT, MANIFEST_NAME, PROGRAM_FILES
from .generate import pack_prompts


def read_manifest(directory: str) -> dict:
    """The manifest of a package directory; ValueError naming ``package`` when it is missing
    or not one of ours."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"package: no {MANIFEST_NAME} in {directory!r} (expected the output "
                         f"directory of `cdssm export`)")
    with open(path) as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"package: {path!r} is not a {FORMAT} manifest")
    for name in PROGRAM_FILES:
        program = os.path.join(directory, manifest["programs"][name])
        if not os.path.isfile(program):
            raise ValueError(f"package: {program!r} is missing")
    return manifest


class PackagedLM:
    """The prefill and decode packages in ``directory``, loaded for the device they were
    compiled for.

    device: None (the package's) or the device to run on, which must match the package's
    (an AOTInductor package holds kernels for one device type): ValueError otherwise, and for
    a CUDA package without a CUDA device.
    """

    def __init__(self, directory: str, device=None):
        manifest = read_manifest(directory)
        compiled_for = manifest["device"]
        if device is not None and torch.device(device).type != compiled_for:
            raise ValueError(f"device: the package in {directory!r} was compiled for "
                             f"{compiled_for!r}, got {str(device)!r} (export again with "
                             f"`cdssm export --device {torch.device(device).type}`)")
        if compiled_for == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: the package in {directory!r} was compiled for 'cuda', "
                             f"but torch sees no CUDA device")
        self.manifest = manifest
        self.device = torch.device(compiled_for, 0) if compiled_for == "cuda" else \
            torch.device("cpu")
        self.vocab_size = manifest["config"]["vocab_size"]
        self.programs = {name: torch._inductor.aoti_load_package(
            os.path.join(directory, manifest["programs"][name])) for name in PROGRAM_FILES}

    def init_state(self, batch_size: int) -> CDSSMState:
        """The zero state of ``batch_size`` sequences (shapes from the manifest)."""
        return CDSSMState(*(
            torch.zeros(leaf["shape"][0], batch_size, *leaf["shape"][2:], device=self.device,
                        dtype=getattr(torch, leaf["dtype"]))
            for leaf in (self.manifest["state"][name] for name in CDSSMState._fields)))

    @torch.no_grad()
    def prefill(self, prompts: list):
        """(logits after each prompt (N, V), state)."""
        input_ids, cu_seqlens = pack_prompts(prompts, self.device)
        if input_ids.shape[1] == 1:  # one prompt of one token: a step from the zero state
            return self.step(input_ids[0], self.init_state(1))
        return self.programs["prefill"](input_ids, cu_seqlens)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state):
        """(logits (N, V), next state) after one token per sequence."""
        return self.programs["decode"](tokens, state)
