"""argparse ``type=`` converters shared by every command: each returns the parsed value or raises
``argparse.ArgumentTypeError`` with the expectation, which argparse prints beside the option."""

import argparse
import math
from typing import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer ≥ ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def finite_float(*, positive: bool) -> Callable[[str], float]:
    """A finite number, > 0 when ``positive``, else ≥ 0."""
    bound = "> 0" if positive else ">= 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1)
positive_float = finite_float(positive=True)
nonnegative_float = finite_float(positive=False)
