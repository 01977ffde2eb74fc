"""Scratch arrays kept for reuse across solves.

A reverse pass keeps every stage of a solve (the tape): megabytes that a fresh ``np.empty``
maps page by page on first touch, which costs as much as the arithmetic on small
problems. The pool hands out arrays of a shape and dtype it has seen before, and takes
them back when a pass is done. It holds at most :data:`POOL_LIMIT` bytes of free arrays.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

__all__ = ["POOL", "POOL_LIMIT", "BufferPool"]

#: Bytes of free arrays the pool keeps; beyond it, released arrays are left to the GC.
POOL_LIMIT = 256 * 2**20


class BufferPool:
    """Free arrays by ``(shape, dtype)``; ``empty`` takes one, ``release`` gives it back."""

    def __init__(self, limit: int = POOL_LIMIT):
        self.limit = limit
        self._free: dict[tuple, list[NDArray]] = {}
        self._held = 0
        self._lock = threading.Lock()

    def empty(self, shape, dtype) -> NDArray:
        key = (tuple(int(d) for d in shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                array = free.pop()
                self._held -= array.nbytes
                return array
        return np.empty(key[0], dtype=dtype)

    def zeros(self, shape, dtype) -> NDArray:
        array = self.empty(shape, dtype)
        array[...] = 0
        return array

    def release(self, *arrays: NDArray | None) -> None:
        with self._lock:
            for array in arrays:
                if array is None or not array.flags.owndata:
                    continue
                if self._held + array.nbytes > self.limit:
                    continue
                self._free.setdefault((array.shape, array.dtype.str), []).append(array)
                self._held += array.nbytes


    def clear(self) -> None:
        """Drop every free array (for measurements of peak memory)."""
        with self._lock:
            self._free.clear()
            self._held = 0


POOL = BufferPool()
