"""Unmasking the small frames browsers send, cheaper than autobahn's masker objects.

Every frame a client sends is masked (RFC 6455 §5.3), and autobahn makes a masker object
for each: its C one (``autobahn.nvx``) costs ~3.8 µs to set up through cffi, more than the
XOR itself for the few hundred bytes of a publish or a ``/meta/connect`` (py-spy on the
one-to-one benchmark: ~7 % of the publish path). For frames under
:data:`SMALL_FRAME` bytes a pure-Python masker XORs the payload as one integer: ~1 µs for
200 bytes. Larger frames keep autobahn's (the integer XOR grows with the size: 3.2 µs
at 1,000 bytes, as much as autobahn's).

:func:`unmask`, for a whole frame's payload (the fast frame path), calls autobahn's C
masker (``_nvx_xormasker``, its cffi module) directly from :data:`DIRECT_FRAME` bytes
on: a masker allocated, run and freed in three C calls, without autobahn's wrapper
object (``ffi.gc``, a ``uint8_t[]`` copy, a buffer copy back). Callgrind, a 300-byte
publish: ~16,900 instructions through the integer XOR, ~9,000 directly; the direct
call's fixed part (~8,300) makes the integer XOR cheaper under ~80 bytes. Without
autobahn's C code (not built, or ``AUTOBAHN_USE_NVX=0``) every size keeps the paths
above.

All of that is the fallback. With the ``websockets`` package's C ``apply_mask`` (a
dependency; it ships wheels for every platform CPython has), every payload of every size
is one C call: ~0.1 µs for the 200 bytes of a publish against ~0.9 µs through the paths
above, and the masker autobahn asks for per frame is ours at every size. A copy without
its compiled speed-ups (a source build without a compiler) keeps the paths above.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket import USES_NVX
from autobahn.websocket.xormasker import create_xor_masker

__all__ = ["DIRECT_FRAME", "SMALL_FRAME", "SmallFrameMasker", "createMasker", "unmask"]

_speedup: Any
try:
    from websockets.speedups import apply_mask as _speedup
except ImportError:  # pragma: no cover (installed with its wheel's C code here)
    _speedup = None

#: Frames shorter than this (bytes) are unmasked by :class:`SmallFrameMasker`.
SMALL_FRAME = 512
#: Whole payloads from this size (bytes) on are unmasked by autobahn's C masker, called
#: directly, when autobahn has it.
DIRECT_FRAME = 128

_direct: tuple[Any, Any, Any, Any] | None = None
if USES_NVX:
    try:
        from _nvx_xormasker import ffi as _ffi  # type: ignore[import-not-found]
        from _nvx_xormasker import lib as _lib
    except ImportError:  # pragma: no cover (USES_NVX says it imported)
        pass
    else:
        _direct = (_ffi.from_buffer, _lib.nvx_xormask_new, _lib.nvx_xormask_process, _lib.nvx_xormask_free)


class SmallFrameMasker:
    """
    Autobahn's masker interface (``pointer``, ``reset``, ``process``), in Python around
    one XOR of the whole piece (``websockets``' C one, or an integer's).
    """

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
        speedup = _speedup
        if speedup is not None:
            return speedup(data, mask)  # type: ignore[no-any-return]
        return _xor(data, mask)


def _xor(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR ``mask`` repeated: one integer operation instead of a loop over bytes."""
    size = len(data)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def unmask(data: bytes, mask: bytes) -> bytes:
    """A whole frame's payload ``data`` unmasked with its 4-byte ``mask``."""
    speedup = _speedup
    if speedup is not None:
        return speedup(data, mask)  # type: ignore[no-any-return]
    size = len(data)
    if size >= DIRECT_FRAME and _direct is not None:
        fromBuffer, new, process, free = _direct
        unmasked = bytearray(data)
        buffer = fromBuffer(unmasked)
        masker = new(mask)
        if masker:
            # Nothing between the allocation and the free can raise.
            process(masker, buffer, size)
            free(masker)
            return bytes(unmasked)
    if size < SMALL_FRAME:
        return _xor(data, mask)
    return create_xor_masker(mask, size).process(data)  # type: ignore[no-any-return]


def createMasker(mask: bytes, length: int | None = None) -> Any:
    """
    ``autobahn``'s ``create_xor_masker``, with :class:`SmallFrameMasker` for small frames,
    and for every frame when ``websockets``' C ``apply_mask`` does its XOR.
    """
    if _speedup is not None or (length is not None and length < SMALL_FRAME):
        return SmallFrameMasker(mask)
    return create_xor_masker(mask, length)
