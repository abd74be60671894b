"""Argument checks shared by every optimizer, layer and schedule.

Each check raises ``ValueError`` whose message names the argument, the
allowed range and the value received, e.g.
``beta_1 must be in [0, 1), got beta_1=1.0``.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Literal, Sequence, overload


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_real(name: str, value: Any) -> float:
    """Require a finite real number (not a bool) and return it as a float."""
    if not _is_real(value):
        raise ValueError(f"{name} must be a real number, got {name}={value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    return float(value)


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Require ``low <= value <= high`` (bounds optional, each open or closed)."""
    number = check_real(name, value)
    too_low = low is not None and (number < low if low_inclusive else number <= low)
    too_high = high is not None and (
        number > high if high_inclusive else number >= high
    )
    if too_low or too_high:
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{name} must be in {left}, {right}, got {name}={value!r}")
    return number


def check_non_negative(name: str, value: Any) -> float:
    return check_range(name, value, low=0.0)


def check_positive(name: str, value: Any) -> float:
    return check_range(name, value, low=0.0, low_inclusive=False)


def check_decay_rate(name: str, value: Any) -> float:
    """A moving-average coefficient: ``0 <= value < 1``."""
    return check_range(name, value, low=0.0, high=1.0, high_inclusive=False)


def check_fraction(name: str, value: Any) -> float:
    """An interpolation weight: ``0 <= value <= 1``."""
    return check_range(name, value, low=0.0, high=1.0)


def check_drop_rate(name: str, value: Any) -> float:
    """A probability of dropping: ``0 <= value < 1`` (1 would drop everything)."""
    return check_range(name, value, low=0.0, high=1.0, high_inclusive=False)


@overload
def check_positive_int(name: str, value: Any) -> int: ...
@overload
def check_positive_int(name: str, value: Any, *, allow_none: Literal[False]) -> int: ...
@overload
def check_positive_int(name: str, value: Any, *, allow_none: bool) -> int | None: ...
def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {name}={value!r}")
    return int(value)


def check_seed(name: str, value: Any) -> int | None:
    """A random seed: an integer >= 0, or None for a random one."""
    return None if value is None else check_non_negative_int(name, value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {name}={value!r}")
    return value


def check_paper_exact(source: str, given: dict[str, Any], exact: dict[str, Any],
                      defaults: dict[str, Any] | None = None) -> None:
    """Under ``paper_exact=True``: each argument in ``given`` must be its value in
    ``source`` (``exact``) or its constructor default (``defaults``), which the mode replaces."""
    for argument, value in given.items():
        allowed = [exact[argument]] + ([] if defaults is None else [defaults[argument]])
        if not any(value is choice or value == choice for choice in allowed):
            raise ValueError(
                f"paper_exact=True sets {argument}={exact[argument]!r} ({source}), "
                f"got {argument}={value!r}"
            )


def check_growth_rate(name: str, value: Any) -> float:
    """A per-step growth factor: ``value >= 1``, ``math.inf`` for unlimited."""
    if _is_real(value) and value == math.inf:
        return math.inf
    return check_range(name, value, low=1.0)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Require one of the strings in ``choices``."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")
    return value


def check_patterns(name: str, patterns: Any) -> tuple[str, ...]:
    """Require a list or tuple of valid regular expressions."""
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{name} must be a list of regex strings, got {name}={patterns!r}")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{name} has an invalid regex {pattern!r}: {error}") from None
    return tuple(patterns)
