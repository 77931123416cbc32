"""The safetensors file format, written as a stream of buffers and read without a second copy.

`safetensors.torch.save` builds the whole file in one bytes object and `load` copies every tensor
out of it: two full copies of a checkpoint in memory. Here the file is a header plus a memoryview
of each tensor's own storage (nothing copied, so an upload can go part by part), and reading maps
tensors onto the one buffer the file was read into. Files are byte-compatible with the safetensors
library (tests load them with it).
"""

from __future__ import annotations

import json
import struct

import torch

from torchkeep.errors import CheckpointError

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
FROM_NAME = {name: dtype for dtype, name in DTYPES.items()}


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor's storage, without copying when it is already contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def encode(tensors: dict[str, torch.Tensor]) -> list[memoryview]:
    """Header + one buffer per tensor, in file order. Their concatenation is a .safetensors file."""
    header: dict[str, object] = {}
    buffers = []
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPES:
            raise CheckpointError(f"tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store")
    # Widest dtypes first (as safetensors does), so that every tensor starts aligned to its element size.
    for name in sorted(tensors, key=lambda n: (-tensors[n].element_size(), n)):
        tensor = tensors[name]
        data = tensor_bytes(tensor.cpu())
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + data.nbytes]}
        offset += data.nbytes
        buffers.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return [memoryview(struct.pack("<Q", len(text)) + text), *buffers]


def to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return b"".join(encode(tensors))


def decode(buffer: bytes | bytearray | memoryview, what: str) -> dict[str, torch.Tensor]:
    """Tensors viewing `buffer` (no copy when it is writable); malformed files raise CheckpointError."""
    view = memoryview(buffer).cast("B")
    try:
        (length,) = struct.unpack_from("<Q", view, 0)
        if length > len(view) - 8:
            raise ValueError(f"header length {length} exceeds the file ({len(view)} bytes)")
        header = json.loads(bytes(view[8 : 8 + length]))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        base = 8 + length
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = FROM_NAME[entry["dtype"]]
            start, end = entry["data_offsets"]
            shape = [int(s) for s in entry["shape"]]
            count = 1
            for size in shape:
                count *= size
            itemsize = torch.empty((), dtype=dtype).element_size()
            if not 0 <= start <= end <= len(view) - base or end - start != count * itemsize:
                raise ValueError(f"tensor '{name}' has offsets {start}..{end} that do not fit its shape or the file")
            if count == 0:
                tensors[name] = torch.empty(shape, dtype=dtype)
                continue
            raw = view[base + start : base + end]
            if raw.readonly or (base + start) % itemsize:  # read-only or misaligned: copy this one
                raw = memoryview(bytearray(raw))
            tensors[name] = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)
        return tensors
    except (ValueError, KeyError, TypeError, struct.error) as error:
        raise CheckpointError(f"{what}: not a valid safetensors file ({error})") from error
