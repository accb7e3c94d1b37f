"""A small reader for a GGUF file's header: its metadata scalars and tensor table, nothing else.

Why not gguf.GGUFReader: it decodes every array (Gemma's 262,144-token vocabulary) and took 21 s on the
embedded Gemma 3 270M here; this skips arrays and reads a header in well under a second. It checks every
length against the file size, so a crafted or truncated file is refused with a message, never a huge read."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

# GGUF value types -> struct format (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
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
    metadata: dict = field(default_factory=dict)  # scalars and strings; arrays as their length
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
        return self.f.read(n)

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALARS:
                self.take(struct.calcsize(_SCALARS[etype]) * count)
            else:
                for _ in range(count):
                    if etype == 8:
                        self.f.seek(self.unpack("<Q"), 1)
                        if self.f.tell() > self.size:
                            raise GGUFHeaderError("a string array runs past the end of the file")
                    else:
                        self.value(etype)
            return count
        raise GGUFHeaderError(f"unknown GGUF value type {vtype}")


def read_gguf_header(path: Path) -> GGUFHeader:
    path = Path(path)
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
            header.metadata[key] = r.value(r.unpack("<I"))
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
