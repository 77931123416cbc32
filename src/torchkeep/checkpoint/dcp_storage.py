"""torch.distributed.checkpoint (DCP) reading and writing through torchkeep's Storage.

DCP plans a sharded save (which rank writes which chunk; a replicated tensor once) and a resharding
load (which saved chunks each rank's DTensor shards need, at any world size). Its own FileSystemWriter
commits by renaming `.metadata.tmp` over `.metadata`, which an object store cannot do atomically
(s3-connector #295), and its metadata is a pickle. Here every rank writes its chunks as one
safetensors file through `Storage.write` (atomic on local disk and S3); `finish`, which DCP runs on
rank 0 only after every rank's write succeeded, writes the layout as JSON (`shards.json`) and hands
every file's size and sha256 to `commit`, which writes the manifest: torchkeep's commit point.
A failure on any rank reaches every rank as DCP's CheckpointException (its collectives carry it).
The reader checks each file against the manifest before a byte of it is used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch.futures import Future
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, SavePlan, SavePlanner, WriteItemType
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult

from torchkeep.checkpoint import format, tensors as tensor_files
from torchkeep.checkpoint.shards import SHARDS_FILE, chunk_key, shard_file
from torchkeep.errors import CheckpointError
from torchkeep.storage import Storage

Entries = dict[str, dict[str, Any]]


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()  # DCP waits on torch's future
    future.set_result(value)
    return future


class ShardWriter(StorageWriter):
    """Writes this rank's chunks (and, on rank 0, `own_files`) under `checkpoints/NAME/`; on rank 0,
    `finish` writes shards.json and calls `commit(entries)` with every file's size and sha256."""

    def __init__(self, storage: Storage, name: str, rank: int, world_size: int,
                 own_files: dict[str, format.Buffers], commit: Callable[[Entries], None] | None) -> None:
        super().__init__()
        self.storage, self.name, self.rank, self.world_size = storage, name, rank, world_size
        self.own_files, self.commit = own_files, commit
        self.own_entries: Entries = {}

    def reset(self, checkpoint_id: Any = None) -> None:
        pass

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return plans

    def _write(self, file_name: str, data: format.Buffers) -> dict[str, Any]:
        self.storage.write(f"{format.PREFIX}/{self.name}/{file_name}", data)
        size, digest = format.size_and_digest(data)
        return {"size": size, "sha256": digest}

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        for file_name, data in self.own_files.items():
            self.own_entries[file_name] = self._write(file_name, data)
        chunks = {}
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                raise CheckpointError(f"'{item.index.fqn}' is not a tensor; a sharded checkpoint holds tensors only")
            chunks[chunk_key(item.index.fqn, item.index.offset)] = planner.resolve_data(item).detach().cpu()
        if not chunks:
            return _done([])
        file_name = shard_file(self.rank, self.world_size)
        entry = {"file": file_name, **self._write(file_name, tensor_files.encode(chunks))}
        return _done([WriteResult(index=item.index, size_in_bytes=0, storage_data=entry) for item in plan.items])

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        where = {(result.index.fqn, tuple(result.index.offset)): result.storage_data["file"]
                 for rank_results in results for result in rank_results}
        entries = dict(self.own_entries)
        entries.update({result.storage_data["file"]: {"size": result.storage_data["size"],
                                                      "sha256": result.storage_data["sha256"]}
                        for rank_results in results for result in rank_results})
        tensors = {}
        for fqn, meta in metadata.state_dict_metadata.items():
            if not isinstance(meta, TensorStorageMetadata):
                raise CheckpointError(f"'{fqn}' is not a tensor; a sharded checkpoint holds tensors only")
            tensors[fqn] = {"dtype": tensor_files.DTYPES[meta.properties.dtype], "size": list(meta.size),
                            "chunks": [{"offsets": list(chunk.offsets), "sizes": list(chunk.sizes),
                                        "file": where[(fqn, tuple(chunk.offsets))]} for chunk in meta.chunks]}
        entries[SHARDS_FILE] = self._write(SHARDS_FILE, json.dumps({"tensors": tensors}).encode())
        assert self.commit is not None, "finish runs on rank 0, which holds the commit"
        self.commit(entries)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return True


class ShardReader(StorageReader):
    """Reads the chunks each rank's load plan asks for, every file checked against the manifest."""

    def __init__(self, storage: Storage, name: str, manifest: dict[str, Any], layout: dict[str, Any]) -> None:
        super().__init__()
        self.storage, self.name, self.manifest, self.layout = storage, name, manifest, layout
        self.files: dict[MetadataIndex, str] = {}

    def reset(self, checkpoint_id: Any = None) -> None:
        pass

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        state_dict_metadata: dict[str, Any] = {}
        for fqn, entry in self.layout["tensors"].items():
            chunks = []
            for chunk in entry["chunks"]:
                chunks.append(ChunkStorageMetadata(offsets=torch.Size(chunk["offsets"]), sizes=torch.Size(chunk["sizes"])))
                self.files[MetadataIndex(fqn, chunk["offsets"])] = chunk["file"]
            state_dict_metadata[fqn] = TensorStorageMetadata(
                properties=TensorProperties(dtype=tensor_files.FROM_NAME[entry["dtype"]]),
                size=torch.Size(entry["size"]), chunks=chunks)
        return Metadata(state_dict_metadata=state_dict_metadata, storage_data=self.files)

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        by_file: dict[str, list[Any]] = {}
        for item in plan.items:
            by_file.setdefault(self.files[item.storage_index], []).append(item)
        for file_name, items in by_file.items():
            entry = self.manifest["files"].get(file_name)
            if entry is None:
                raise CheckpointError(f"{self.storage.uri}/{format.PREFIX}/{self.name}/{file_name}: not in the manifest")
            data = format.read_verified(self.storage, self.name, file_name, entry)
            chunks = tensor_files.decode(data, f"{self.storage.uri}/{format.PREFIX}/{self.name}/{file_name}")
            for item in items:
                source = chunks[chunk_key(item.storage_index.fqn, item.storage_index.offset)]
                for dim, (offset, length) in enumerate(zip(item.storage_offsets, item.lengths)):
                    source = source.narrow(dim, offset, length)
                target = planner.resolve_tensor(item).detach()
                target.copy_(source)
                planner.commit_tensor(item, target)
        return _done(None)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return True
