"""S3-compatible object storage through boto3 (extra `torchkeep[s3]`, imported lazily).

Configured only the standard AWS way, so AWS, MinIO, R2 and others work with no torchkeep knobs:
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_PROFILE, the credential chain, and
`s3 = addressing_style = path` in the AWS config file for path-style endpoints.

- write: one PUT for small objects; above `part_size`, a multipart upload fed part by part from the
  caller's buffers with at most `max_parts_in_flight` parts in memory, parts uploaded in parallel;
  any failure aborts the upload, so nothing partial ever becomes visible. A PUT is atomic on S3:
  nothing here relies on rename (object stores have none).
- read: one GET into a single buffer; when that connection delivers less than `single_stream_rate`
  (a per-connection cap), the rest of a large object comes in parallel ranged GETs instead.
- read_range: one ranged GET (a parquet footer or column chunk of a streamed dataset).
- retries: botocore's standard retry mode (throttling, 5xx, dropped connections) with backoff.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from torchkeep.errors import MissingExtraError, StorageError

MiB = 1 << 20
CHUNK = 256 * 1024  # bytes read from a response at a time: small, so 16 readers hold little memory
PROBE_BYTES = 4 * MiB  # a read measures its connection's rate over this much, or PROBE_S seconds
PROBE_S = 0.25


def _boto3() -> Any:
    try:
        import boto3
        import botocore
    except ImportError:
        raise MissingExtraError("boto3", "s3") from None
    return boto3, botocore


def split_uri(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: expected s3://bucket/prefix")
    return bucket, prefix.strip("/")


class _PartBody(io.RawIOBase):
    """One multipart part as a seekable file over the caller's buffers: uploaded without a copy
    (botocore rewinds it to retry), so parts in flight cost no memory of their own."""

    def __init__(self, views: list[memoryview]) -> None:
        self.views = views
        self.size = sum(view.nbytes for view in views)
        self.position = 0

    def __len__(self) -> int:
        return self.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = min(max(base + offset, 0), self.size)
        return self.position

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        written, start = 0, 0
        for view in self.views:
            end = start + view.nbytes
            if self.position < end and written < target.nbytes:
                offset = self.position - start
                take = min(view.nbytes - offset, target.nbytes - written)
                target[written : written + take] = view[offset : offset + take]
                written += take
                self.position += take
            start = end
        return written


class _ChangedWhileReading(Exception):
    """The object was overwritten between the ranged reads of one `read`."""


class S3Storage:
    def __init__(
        self,
        uri: str,
        *,
        part_size: int = 8 * MiB,
        max_parts_in_flight: int = 16,
        threads: int = 16,
        single_stream_rate: float = 100e6,
        client: Any = None,
    ) -> None:
        boto3, botocore = _boto3()
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_uri(uri)
        self.part_size = part_size
        self.max_parts_in_flight = max_parts_in_flight
        self.threads = threads
        self.single_stream_rate = single_stream_rate  # bytes/s above which one GET is not split
        self._botocore = botocore
        if client is None:
            config = botocore.config.Config(
                retries={"mode": "standard", "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", 8))},
                max_pool_connections=max(threads, max_parts_in_flight) + 2,
                connect_timeout=10, read_timeout=60,
            )
            client = boto3.session.Session().client("s3", config=config)
        self.client = client
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="torchkeep-s3")
            return self._pool

    def _error(self, error: Exception, key: str, action: str) -> StorageError:
        """One clear line for the failures users meet: no bucket, no access, no endpoint."""
        where = self._where(key)
        exceptions = self._botocore.exceptions
        if isinstance(error, exceptions.ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return StorageError(f"{where}: bucket '{self.bucket}' does not exist")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return StorageError(f"{where}: access denied ({code}); check the AWS credentials and bucket policy")
            if code in ("NoSuchKey", "404", "NotFound"):
                if not self._bucket_exists():
                    return StorageError(f"{where}: bucket '{self.bucket}' does not exist")
                return StorageError(f"{where}: no such object")
            return StorageError(f"{where}: {action} failed: {code} {error.response.get('Error', {}).get('Message', '')}".rstrip())
        if isinstance(error, exceptions.NoCredentialsError):
            return StorageError(f"{where}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectionError)):
            endpoint = self.client.meta.endpoint_url
            return StorageError(f"{where}: cannot reach the S3 endpoint {endpoint} ({error}); check AWS_ENDPOINT_URL")
        return StorageError(f"{where}: {action} failed: {error}")

    def _bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except self._botocore.exceptions.ClientError as error:
            return error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound")

    # -- the Storage protocol -------------------------------------------------------------------

    def read(self, key: str) -> bytearray:
        for _ in range(5):
            try:
                return self._read(key)
            except _ChangedWhileReading:
                continue  # overwritten between our ranged reads: read the new version whole
        raise StorageError(f"{self._where(key)}: the object kept changing while it was being read")

    def _read(self, key: str) -> bytearray:
        """One GET; split into parallel ranged GETs only when that one connection turns out slow.

        A per-connection cap (real object stores, a WAN) makes parallel ranges many times faster;
        a connection that already delivers `single_stream_rate` gains little from them, and some
        servers (moto) copy the whole object for every ranged GET, so splitting there costs
        O(ranges x size). The first GET's own rate, measured once bytes flow, decides.
        """
        name = self._key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=name)
            size, etag, body = response["ContentLength"], response["ETag"], response["Body"]
            buffer = bytearray(size)
            view = memoryview(buffer)
            position = self._fill(body, view, 0, min(size, CHUNK), key)
            flowing = time.perf_counter()  # first bytes in: the server's own start-up is behind us
            while position < size and position < PROBE_BYTES and time.perf_counter() - flowing < PROBE_S:
                position = self._fill(body, view, position, min(size, position + CHUNK), key)
            elapsed = max(time.perf_counter() - flowing, 1e-6)
            slow = (position - min(size, CHUNK)) / elapsed < self.single_stream_rate
            if size - position <= self.part_size or not slow:
                self._fill(body, view, position, size, key)  # the rest from the same response
                return buffer
            # This response goes on for the first span; the rest in at most `threads` ranges, all in
            # flight at once, each tied to this version by IfMatch: never half old, half new bytes.
            span = max(self.part_size, math.ceil((size - position) / (self.threads + 1)))
            first_end = min(size, position + span)

            def fetch(start: int) -> None:
                end = min(size, start + span)
                ranged = self.client.get_object(Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end - 1}",
                                                IfMatch=etag)["Body"]
                self._fill(ranged, view, start, end, key)

            futures = [self._executor().submit(fetch, start) for start in range(first_end, size, span)]
            try:
                self._fill(body, view, position, first_end, key)
            finally:
                body.close()  # the rest of this response is not needed
            for future in futures:
                future.result()
            return buffer
        except StorageError:
            raise
        except self._botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise _ChangedWhileReading() from error
            raise self._error(error, key, "read") from error
        except Exception as error:
            raise self._error(error, key, "read") from error

    def _fill(self, body: Any, view: memoryview, start: int, end: int, key: str = "") -> int:
        """Read body bytes into view[start:end]; raise if the body ends early. Returns `end`."""
        position = start
        while position < end:
            chunk = body.read(min(CHUNK, end - position))
            if not chunk:
                raise StorageError(f"{self._where(key)}: the response ended early ({position} of {end} bytes)")
            view[position : position + len(chunk)] = chunk
            position += len(chunk)
        return position

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except Exception as error:
            raise self._error(error, key, "read") from error

    def read_range(self, key: str, start: int, end: int) -> bytearray:
        """Bytes [start, end) of an object in one ranged GET (botocore retries it): a parquet footer or
        column chunk, never the whole object."""
        if end <= start:
            return bytearray()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")["Body"]
            buffer = bytearray(end - start)
            self._fill(body, memoryview(buffer), 0, end - start, key)
            return buffer
        except StorageError:
            raise
        except Exception as error:
            raise self._error(error, key, "read") from error

    def write(self, key: str, data: bytes | bytearray | memoryview | Iterable[Any]) -> None:
        chunks = [memoryview(data).cast("B")] if isinstance(data, (bytes, bytearray, memoryview)) else [
            memoryview(chunk).cast("B") for chunk in data
        ]
        total = sum(chunk.nbytes for chunk in chunks)
        name = self._key(key)
        try:
            if total <= self.part_size:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=b"".join(chunks))
            else:
                self._multipart(name, chunks)
        except StorageError:
            raise
        except Exception as error:
            raise self._error(error, key, "write") from error

    def _multipart(self, name: str, chunks: list[memoryview]) -> None:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        slots = threading.BoundedSemaphore(self.max_parts_in_flight)
        futures: list[Future[dict[str, Any]]] = []

        def upload(number: int, views: list[memoryview]) -> dict[str, Any]:
            try:
                response = self.client.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=_PartBody(views)
                )
                return {"PartNumber": number, "ETag": response["ETag"]}
            finally:
                slots.release()

        def submit(views: list[memoryview]) -> None:
            slots.acquire()  # at most max_parts_in_flight requests at once
            for future in futures:
                if future.done() and future.exception() is not None:
                    slots.release()
                    raise future.exception()  # type: ignore[misc]
            futures.append(self._executor().submit(upload, len(futures) + 1, views))

        try:
            part: list[memoryview] = []
            filled = 0
            for chunk in chunks:
                while chunk.nbytes:
                    take = min(self.part_size - filled, chunk.nbytes)
                    part.append(chunk[:take])  # a view of the caller's bytes, not a copy
                    filled += take
                    chunk = chunk[take:]
                    if filled == self.part_size:
                        submit(part)
                        part, filled = [], 0
            if part or not futures:
                submit(part)
            parts = [future.result() for future in futures]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            for future in futures:
                future.cancel()
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except Exception:  # the original error matters more; an orphan upload is invisible anyway
                pass
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self._botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                if not self._bucket_exists():
                    raise StorageError(f"{self._where(key)}: bucket '{self.bucket}' does not exist") from None
                return False
            raise self._error(error, key, "exists") from error
        except Exception as error:
            raise self._error(error, key, "exists") from error

    def list(self, prefix: str = "") -> list[str]:
        base = self._key(prefix)
        if base and not base.endswith("/"):
            base += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except Exception as error:
            raise self._error(error, prefix, "list") from error
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as error:
            raise self._error(error, key, "delete") from error
