"""Parameter counts of a language model, per top-level part and per block (tied weights once)."""

from torch import nn


class ParameterCounts(dict):
    """{part name: count} (a list of counts for a ``ModuleList`` such as ``blocks``) and "total";
    ``str()`` prints one line per part."""

    def __str__(self) -> str:
        lines = []
        for name, count in self.items():
            parts = [(f"{name}.{i}", c) for i, c in enumerate(count)] if isinstance(count, list) \
                else [(name, count)]
            lines.extend(f"{part:<12}{c:>16,}" for part, c in parts)
        return "\n".join(lines)


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Counts every top-level child of ``model`` (one entry per module of a ``ModuleList``) and the
    total. A tensor shared by several parts (a tied embedding) counts once, at its first part."""
    seen = set()

    def count(parameters) -> int:
        total = 0
        for p in parameters:
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    counts = ParameterCounts()
    own = count(model.parameters(recurse=False))
    if own:
        counts["own"] = own
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            counts[name] = [count(m.parameters()) for m in child]
        else:
            counts[name] = count(child.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
