"""save_pretrained / from_pretrained for every model: config JSON + safetensors weights.

A model class using ``PretrainedMixin`` sets ``config_class`` (a dataclass with ``to_dict`` and
``from_dict``) and ``arch`` (the name written into the config file). Weights are the full
``state_dict`` (persistent buffers included, e.g. the state-energy EMA); tied weights are stored
once and re-tied on load. Files are written atomically (temporary name, then rename).
"""

import json
import os

from safetensors.torch import load_file, save_file

from ..files import atomic_write, write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _unique_tensors(state_dict):
    """Drops the later names of tensors that share storage (tied weights)."""
    seen, out = set(), {}
    for name, t in state_dict.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().contiguous().cpu()
    return out


class PretrainedMixin:
    config_class = None
    arch = None

    def save_pretrained(self, directory: str) -> None:
        """Writes ``config.json`` ({"arch": ..., **config}) and ``model.safetensors``."""
        os.makedirs(directory, exist_ok=True)
        config = {"arch": self.arch, **self.config.to_dict()}
        write_json(os.path.join(directory, CONFIG_NAME), config)
        weights = _unique_tensors(self.state_dict())
        atomic_write(os.path.join(directory, WEIGHTS_NAME), lambda p: save_file(weights, p))

    @classmethod
    def from_pretrained(cls, directory: str, map_location: str = "cpu"):
        """Builds the model from ``config.json`` and loads ``model.safetensors`` (strict)."""
        config_path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"directory: no {CONFIG_NAME} in {directory!r}")
        with open(config_path) as f:
            config = json.load(f)
        arch = config.pop("arch", None)
        if arch != cls.arch:
            raise ValueError(f"directory: holds a {arch!r} model, expected {cls.arch!r}")
        model = cls(cls.config_class.from_dict(config))
        weights = load_file(os.path.join(directory, WEIGHTS_NAME), device=map_location)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = set(getattr(model, "tied_weight_names", ()))
        missing = [m for m in missing if m not in tied]
        if missing or unexpected:
            raise ValueError(f"directory: weights do not match the model (missing {missing}, "
                             f"unexpected {unexpected})")
        return model.to(map_location)
