"""Splitting work into bounded rounds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int) -> Iterator[list[_T]]:
    """``items`` in consecutive lists of at most ``size``."""
    for i in range(0, len(items), size):
        yield list(items[i:i + size])
