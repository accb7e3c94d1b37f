"""A small reader for a GGUF file's header: its metadata scalars and tensor table, and only the arrays asked for.

Why not gguf.GGUFReader: it decodes every array (Gemma's 262,144-token vocabulary) and took 21 s on the
embedded Gemma 3 270M here; this skips arrays and reads a header in well under a second. Arrays named in
`arrays=` are read too, still without GGUFReader's per-element work: a numeric array is one np.frombuffer,
a string array is read in large chunks and walked in memory. It checks every length against the file size,
so a crafted or truncated file is refused with a message, never a huge read."""
from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# GGUF value types -> struct format (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# GGUF value types -> numpy dtype, for the numeric arrays a caller asks for
_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_CHUNK = 1 << 20  # string arrays are read this much at a time (Gemma's tokens: about 4 reads)
# ggml type -> (block size, bytes per block) for the types adapters and tests use; others: size unchecked
_TYPE_SIZES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24)}


class GGUFHeaderError(ValueError):
    """The header is not a readable GGUF header (truncated, or lengths that do not fit the file)."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GGUFHeader:
    # scalars and strings; arrays as their length, except those asked for by read_gguf_header(arrays=...):
    # a numeric array as a read-only numpy array, a string array as list[str]
    metadata: dict = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    @property
    def kind(self) -> str:
        return str(self.metadata.get("general.type", "model"))

    def truncation(self) -> str | None:
        """Why the tensor data does not fit the file, or None when every tensor of a known type fits."""
        for t in self.tensors:
            if t.ggml_type not in _TYPE_SIZES:
                continue
            block, nbytes = _TYPE_SIZES[t.ggml_type]
            n = 1
            for d in t.shape:
                n *= d
            end = self.data_offset + t.offset + n // block * nbytes
            if end > self.file_size:
                return (f"tensor {t.name!r} ends at byte {end} but the file has {self.file_size} bytes "
                        "(truncated?)")
        return None


class _Reader:
    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def take(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise GGUFHeaderError(f"header runs past the end of the file ({self.size} bytes)")
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFHeaderError("the file ended early (changed while being read?)")
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.f.tell() + n > self.size:
            raise GGUFHeaderError(f"header runs past the end of the file ({self.size} bytes)")
        self.f.seek(n, 1)

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool = False):
        """The value of type `vtype` at the file position; an array only as its length unless `keep`."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALARS:
                nbytes = struct.calcsize(_SCALARS[etype]) * count
                if not keep:
                    self.skip(nbytes)
                    return count
                import numpy as np

                return np.frombuffer(self.take(nbytes), dtype=_DTYPES[etype])
            if etype == 8:
                strings = self.strings(count, keep)
                return strings if keep else count
            if count * 12 > self.size - self.f.tell():  # an element array is at least its type and count
                raise GGUFHeaderError("an array of arrays runs past the end of the file")
            values = [self.value(etype, keep) for _ in range(count)]
            return values if keep else count
        raise GGUFHeaderError(f"unknown GGUF value type {vtype}")

    def strings(self, count: int, keep: bool) -> list[str]:
        """`count` GGUF strings (u64 length, UTF-8 bytes) from the file position, read in chunks of _CHUNK and
        walked in memory; decoded into the returned list when `keep`, else only stepped over."""
        f, size = self.f, self.size
        if count * 8 > size - f.tell():
            raise GGUFHeaderError("a string array runs past the end of the file")
        out: list[str] = []
        buf, p = b"", 0  # the chunk in memory, and the position in it; the file position is at its end

        def refill(need: int) -> None:  # make buf[p:p + need] available
            nonlocal buf, p
            rest = buf[p:]
            avail = size - f.tell()
            if need - len(rest) > avail:
                raise GGUFHeaderError("a string array runs past the end of the file")
            buf, p = rest + f.read(min(avail, max(need - len(rest), _CHUNK))), 0
            if len(buf) < need:
                raise GGUFHeaderError("the file ended early (changed while being read?)")

        for _ in range(count):
            if p + 8 > len(buf):
                refill(8)
            n = int.from_bytes(buf[p:p + 8], "little")
            p += 8
            if p + n > len(buf):
                if not keep:  # step over a string longer than the chunk without reading it
                    if p + n - len(buf) > size - f.tell():
                        raise GGUFHeaderError("a string array runs past the end of the file")
                    f.seek(p + n - len(buf), 1)
                    buf, p = b"", 0
                    continue
                refill(n)
            if keep:
                out.append(buf[p:p + n].decode("utf-8", errors="replace"))
            p += n
        f.seek(p - len(buf), 1)  # hand back what was read past the array
        return out


def read_gguf_header(path: Path, arrays: Iterable[str] = ()) -> GGUFHeader:
    """The header of the GGUF at `path`. Arrays keep only their length in `metadata`, except the keys named
    in `arrays`, whose values are read (see GGUFHeader.metadata)."""
    path, arrays = Path(path), frozenset(arrays)
    size = path.stat().st_size
    with path.open("rb") as f:
        r = _Reader(f, size)
        if r.take(4) != b"GGUF":
            raise GGUFHeaderError("not a GGUF file (bad magic bytes)")
        version = r.unpack("<I")
        if version < 2:
            raise GGUFHeaderError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        if n_tensors > size or n_kv > size:
            raise GGUFHeaderError("tensor or metadata count larger than the file")
        header = GGUFHeader(file_size=size)
        for _ in range(n_kv):
            key = r.string()
            header.metadata[key] = r.value(r.unpack("<I"), keep=key in arrays)
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if n_dims > 8:
                raise GGUFHeaderError(f"tensor {name!r} claims {n_dims} dimensions")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            header.tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
        align = int(header.metadata.get("general.alignment", 32)) or 32
        header.data_offset = (f.tell() + align - 1) // align * align
    return header
