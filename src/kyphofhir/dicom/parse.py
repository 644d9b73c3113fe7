"""Checking a received data set before anything of it is kept.

pydicom is tolerant on purpose: a data set cut in the middle of its pixel data reads
without an error (the short value is kept, or an unterminated encapsulated Pixel Data is
silently dropped). A receiver must not acknowledge such an instance, so
:func:`check_structure` walks the encoded elements first and fails unless every element,
item and delimiter fits exactly into the bytes received. Only then is the data set read
with pydicom (without pixel data) for its identifiers and for FHIR mapping.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

__all__ = ["DecodeError", "Received", "check_structure", "decode", "file_header"]

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
# VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 7.1.2)
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
MAX_DEPTH = 64


class DecodeError(ValueError):
    """The data set cannot be parsed in its transfer syntax."""


class _Walker:
    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        prefix = "<" if little else ">"
        self.u16 = struct.Struct(prefix + "H")
        self.u32 = struct.Struct(prefix + "L")
        self.tag = struct.Struct(prefix + "HH")

    def _need(self, pos: int, n: int, end: int, what: str) -> None:
        if pos + n > end:
            raise DecodeError(f"data set ends inside {what} at byte {pos}")

    def _read_tag(self, pos: int, end: int) -> int:
        self._need(pos, 4, end, "a tag")
        group, elem = self.tag.unpack_from(self.data, pos)
        return int((group << 16) | elem)

    def elements(self, pos: int, end: int, depth: int, until_item_end: bool) -> int:
        """Walk elements from ``pos``; stop at ``end`` (defined length) or at an Item
        Delimitation Item (undefined-length item). Returns the position after it."""
        if depth > MAX_DEPTH:
            raise DecodeError("sequences nested too deeply")
        while pos < end:
            tag = self._read_tag(pos, end)
            if tag == ITEM_END:
                if not until_item_end:
                    raise DecodeError(f"unexpected item delimiter at byte {pos}")
                self._need(pos, 8, end, "an item delimiter")
                return pos + 8
            if tag in (ITEM, SEQUENCE_END):
                raise DecodeError(f"item tag outside a sequence at byte {pos}")
            if self.implicit:
                self._need(pos, 8, end, "an element header")
                vr = b""
                length = self.u32.unpack_from(self.data, pos + 4)[0]
                pos += 8
            else:
                self._need(pos, 8, end, "an element header")
                vr = self.data[pos + 4 : pos + 6]
                if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                    raise DecodeError(f"invalid VR {vr!r} at byte {pos + 4}")
                if vr in LONG_VRS:
                    self._need(pos, 12, end, "an element header")
                    length = self.u32.unpack_from(self.data, pos + 8)[0]
                    pos += 12
                else:
                    length = self.u16.unpack_from(self.data, pos + 6)[0]
                    pos += 8
            if length == UNDEFINED:
                if tag == PIXEL_DATA and not self.implicit and vr in (b"OB", b"OW"):
                    pos = self.fragments(pos, end)
                elif vr == b"UN":  # PS3.5 6.2.2: content is implicit VR little endian
                    inner = _Walker(self.data, implicit=True, little=True)
                    pos = inner.items(pos, end, depth + 1, undefined=True)
                elif vr in (b"SQ", b""):
                    pos = self.items(pos, end, depth + 1, undefined=True)
                else:
                    raise DecodeError(f"undefined length for VR {vr!r} at byte {pos}")
            else:
                self._need(pos, length, end, f"the value of ({tag >> 16:04X},{tag & 0xFFFF:04X})")
                if vr == b"SQ":
                    self.items(pos, pos + length, depth + 1, undefined=False)
                pos += length
        if until_item_end:
            raise DecodeError("item without its delimiter at the end of the data")
        if pos != end:  # pragma: no cover - loop condition
            raise DecodeError("element overruns its container")
        return pos

    def items(self, pos: int, end: int, depth: int, undefined: bool) -> int:
        """Walk sequence items; an undefined-length sequence ends with its delimiter."""
        while pos < end or undefined:
            tag = self._read_tag(pos, end)
            self._need(pos, 8, end, "an item header")
            length = self.u32.unpack_from(self.data, pos + 4)[0]
            pos += 8
            if tag == SEQUENCE_END:
                if not undefined:
                    raise DecodeError(f"sequence delimiter in a defined-length sequence at {pos}")
                return pos
            if tag != ITEM:
                raise DecodeError(f"expected an item at byte {pos - 8}")
            if length == UNDEFINED:
                pos = self.elements(pos, end, depth, until_item_end=True)
            else:
                self._need(pos, length, end, "an item")
                self.elements(pos, pos + length, depth, until_item_end=False)
                pos += length
        return pos

    def fragments(self, pos: int, end: int) -> int:
        """Encapsulated Pixel Data: items of raw bytes, then the sequence delimiter."""
        while True:
            tag = self._read_tag(pos, end)
            self._need(pos, 8, end, "a fragment header")
            length = self.u32.unpack_from(self.data, pos + 4)[0]
            pos += 8
            if tag == SEQUENCE_END:
                return pos
            if tag != ITEM or length == UNDEFINED:
                raise DecodeError(f"invalid pixel data fragment at byte {pos - 8}")
            self._need(pos, length, end, "a pixel data fragment")
            pos += length


def check_structure(data: bytes, transfer_syntax: UID) -> None:
    """Raise :class:`DecodeError` unless ``data`` is a complete, well-formed data set."""
    if not data:
        raise DecodeError("empty data set")
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data) + inflater.flush()
        except zlib.error as exc:
            raise DecodeError(f"deflated data set does not inflate: {exc}") from None
        if not inflater.eof:
            raise DecodeError("deflated data set is truncated")
        implicit, little = False, True
    else:
        implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    _Walker(data, implicit, little).elements(0, len(data), 0, until_item_end=False)


def file_header(file_meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` and the encoded file meta: what goes before the data set."""
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Received:
    """A checked data set: the header to write before it and the parsed attributes."""

    header: bytes
    data: bytes
    dataset: Dataset  # without pixel data


def decode(data: bytes, file_meta: FileMetaDataset) -> Received:
    """Check ``data`` and read it (without pixel data); raises :class:`DecodeError`."""
    transfer_syntax = UID(file_meta.TransferSyntaxUID)
    check_structure(data, transfer_syntax)
    header = file_header(file_meta)
    try:
        dataset = dcmread(io.BytesIO(header + data), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many kinds on broken input
        raise DecodeError(f"pydicom cannot read the data set: {exc}") from exc
    return Received(header=header, data=data, dataset=dataset)
