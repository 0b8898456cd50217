"""cdssm.argtypes: accepted values come back converted; rejected ones name the expectation."""

import argparse

import pytest

from cdssm.argtypes import int_at_least, nonnegative_float, positive_float, positive_int

CASES = [
    (positive_int, "3", 3, None),
    (positive_int, "0", None, "integer >= 1"),
    (positive_int, "2.5", None, "expected an integer"),
    (int_at_least(0), "0", 0, None),
    (int_at_least(0), "-1", None, "integer >= 0"),
    (positive_float, "1e-3", 1e-3, None),
    (positive_float, "0", None, "finite number > 0"),
    (positive_float, "inf", None, "finite number > 0"),
    (nonnegative_float, "0", 0.0, None),
    (nonnegative_float, "nan", None, "finite number >= 0"),
    (nonnegative_float, "-0.5", None, "finite number >= 0"),
    (nonnegative_float, "x", None, "expected a number"),
]


@pytest.mark.parametrize("parse, text, value, error", CASES)
def test_argtypes(parse, text, value, error):
    if error is None:
        assert parse(text) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=error):
            parse(text)
