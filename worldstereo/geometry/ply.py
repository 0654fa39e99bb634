"""Binary little-endian PLY of one vertex element, written and read as numpy structured arrays (no per-point Python)."""

from __future__ import annotations

import numpy as np

from worldstereo.errors import InvalidInputError

_TYPES = {"f8": "double", "f4": "float", "i4": "int", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short",
          "u4": "uint"}
_NAMES = {name: code for code, name in _TYPES.items()} | {"float64": "f8", "float32": "f4", "int32": "i4",
                                                          "uint8": "u1", "int8": "i1", "uint16": "u2",
                                                          "int16": "i2", "uint32": "u4"}


def ply_bytes(columns: dict[str, np.ndarray], comment: str | None = None) -> bytes:
    """A PLY whose vertices have one property per column (all ``[P]``, in order), e.g. ``x, y, z, red, ...``."""
    sizes = {len(values) for values in columns.values()}
    if len(sizes) != 1:
        raise InvalidInputError(f"PLY columns must have one length, got {sorted(sizes)}")
    count = sizes.pop()
    dtype = np.dtype([(name, "<" + values.dtype.str[1:]) for name, values in columns.items()])
    if any(dtype[name].str[1:] not in _TYPES for name in dtype.names):
        raise InvalidInputError(f"unsupported PLY property types in {dtype}")
    header = ["ply", "format binary_little_endian 1.0"] + ([f"comment {comment}"] if comment else [])
    header += [f"element vertex {count}"]
    header += [f"property {_TYPES[dtype[name].str[1:]]} {name}" for name in dtype.names] + ["end_header", ""]
    head = np.frombuffer("\n".join(header).encode("ascii"), np.uint8)
    data = np.empty(len(head) + count * dtype.itemsize, np.uint8)
    data[:len(head)] = head
    rows = data[len(head):].view(dtype)
    for name, values in columns.items():
        rows[name] = values
    return data.tobytes()


def read_ply(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """Columns of a binary little-endian PLY with one ``vertex`` element of scalar properties."""
    end = bytes(data[:65536]).find(b"end_header\n")
    if not bytes(data[:4]) == b"ply\n" or end < 0:
        raise InvalidInputError("not a PLY file")
    lines = bytes(data[:end]).decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise InvalidInputError("only binary little-endian PLY files are read")
    fields, count, in_vertex = [], 0, False
    for line in lines:
        words = line.split()
        if words[:1] == ["element"]:
            in_vertex = words[1] == "vertex"
            if not in_vertex or fields:
                raise InvalidInputError("only PLY files with a single vertex element are read")
            count = int(words[2])
        elif words[:1] == ["property"] and in_vertex:
            if words[1] == "list" or words[1] not in _NAMES:
                raise InvalidInputError(f"unsupported PLY property {line!r}")
            fields.append((words[2], "<" + _NAMES[words[1]]))
    rows = np.frombuffer(data, dtype=np.dtype(fields), count=count, offset=end + len(b"end_header\n"))
    return {name: rows[name] for name in rows.dtype.names}
