"""Unmasking the small frames browsers send, cheaper than autobahn's masker objects.

Every frame a client sends is masked (RFC 6455 §5.3), and autobahn makes a masker object
for each: its C one (``autobahn.nvx``) costs ~3.8 µs to set up through cffi, more than the
XOR itself for the few hundred bytes of a publish or a ``/meta/connect`` (py-spy on the
one-to-one benchmark: ~7 % of the publish path). For frames under
:data:`SMALL_FRAME` bytes a pure-Python masker XORs the payload as one integer: ~1 µs for
200 bytes. Larger frames keep autobahn's (the integer XOR grows with the size: 3.2 µs
at 1,000 bytes, as much as autobahn's).
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.xormasker import create_xor_masker

__all__ = ["SMALL_FRAME", "SmallFrameMasker", "createMasker", "unmask"]

#: Frames shorter than this (bytes) are unmasked by :class:`SmallFrameMasker`.
SMALL_FRAME = 512


class SmallFrameMasker:
    """Autobahn's masker interface (``pointer``, ``reset``, ``process``), in Python."""

    __slots__ = ("_mask", "_pointer")

    def __init__(self, mask: bytes) -> None:
        self._mask = bytes(mask)
        self._pointer = 0

    def pointer(self) -> int:
        return self._pointer

    def reset(self) -> None:
        self._pointer = 0

    def process(self, data: bytes) -> bytes:
        # A frame may arrive in pieces: each piece continues the mask where the last ended.
        size = len(data)
        shift = self._pointer & 3
        mask = self._mask[shift:] + self._mask[:shift] if shift else self._mask
        self._pointer += size
        return _xor(data, mask)


def _xor(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR ``mask`` repeated: one integer operation instead of a loop over bytes."""
    size = len(data)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def unmask(data: bytes, mask: bytes) -> bytes:
    """A whole frame's payload ``data`` unmasked with its 4-byte ``mask``."""
    if len(data) < SMALL_FRAME:
        return _xor(data, mask)
    return create_xor_masker(mask, len(data)).process(data)  # type: ignore[no-any-return]


def createMasker(mask: bytes, length: int | None = None) -> Any:
    """``autobahn``'s ``create_xor_masker``, with :class:`SmallFrameMasker` for small frames."""
    if length is not None and length < SMALL_FRAME:
        return SmallFrameMasker(mask)
    return create_xor_masker(mask, length)
