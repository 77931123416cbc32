"""S3-compatible object storage through s3torchconnector's client (extra `torchkeep[s3torchconnector]`).

For users who already run AWS's connector (its CRT client): the same `s3://bucket/prefix` URIs, the
same Storage protocol and the same checkpoint commit protocol as the boto3 backend. Selected with
`TORCHKEEP_S3_BACKEND=s3torchconnector` (every command and API call that opens an `s3://` URI), or
`open_storage(uri, s3_backend="s3torchconnector")` / `Checkpointer(uri, s3_backend=...)`.

Configured only the standard AWS way: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (or `endpoint_url`
in the profile), AWS_REGION / AWS_DEFAULT_REGION (or the profile's `region`), AWS_PROFILE, the
credential chain (the CRT's default chain: environment, profile, instance metadata), and
`s3 = addressing_style = path` in the AWS config file for path-style endpoints.

- write: one streamed upload per object (the CRT splits it into parallel multipart parts). It is
  completed only after the last byte was handed over; on any error, or an interrupt, the stream is
  dropped without completing, which aborts the upload, so nothing partial ever becomes visible.
  (The connector's own `S3Writer` completes the upload when it is garbage-collected, even after an
  error: a partial object. It is therefore never left to its finalizer here.)
- read: HEAD, then one GET stream into a single buffer (the CRT fetches its parts in parallel).
  Above one part, a second HEAD checks the object was not replaced during the read; if it was, the
  read starts again, so a reader never gets half of one version and half of another.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torchkeep.errors import MissingExtraError, StorageError
from torchkeep.storage.s3 import split_uri

MiB = 1 << 20


def _connector() -> Any:
    try:
        import s3torchconnector
        from s3torchconnector._s3client import S3Client
    except ImportError:
        raise MissingExtraError("s3torchconnector", "s3torchconnector") from None
    return s3torchconnector, S3Client


def aws_settings() -> dict[str, str | None]:
    """Endpoint, region, profile and addressing style from the standard AWS environment and config file."""
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
    section: dict[str, str] = {}
    config_file = Path(os.environ.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config").expanduser()
    if config_file.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(config_file)
        except configparser.Error as error:
            raise StorageError(f"{config_file}: unreadable AWS config file ({error})") from error
        name = "default" if profile in (None, "default") else f"profile {profile}"
        if parser.has_section(name):
            section = dict(parser.items(name))
    # Nested settings (`s3 =` then indented `key = value` lines) come as one multi-line value.
    s3_settings = {}
    for line in section.get("s3", "").splitlines():
        key, _, value = line.partition("=")
        if value:
            s3_settings[key.strip()] = value.strip()
    return {
        "endpoint": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        or s3_settings.get("endpoint_url") or section.get("endpoint_url"),
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        or section.get("region") or "us-east-1",
        "profile": profile,
        "addressing_style": s3_settings.get("addressing_style"),
    }


class S3ConnectorStorage:
    def __init__(self, uri: str, *, part_size: int = 8 * MiB, client: Any = None) -> None:
        connector, client_class = _connector()
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_uri(uri)
        self.part_size = part_size
        self._exception = connector.S3Exception
        settings = aws_settings()
        self.endpoint = settings["endpoint"]
        if client is None:
            config = connector.S3ClientConfig(
                part_size=part_size,
                force_path_style=settings["addressing_style"] == "path",
                max_attempts=int(os.environ.get("AWS_MAX_ATTEMPTS", "10")),
                profile=settings["profile"],
            )
            client = client_class(settings["region"], endpoint=self.endpoint, s3client_config=config)
        self.client = client

    # -- helpers --------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _bucket_exists(self) -> bool:
        try:
            next(iter(self.client.list_objects(self.bucket, "", max_keys=1)), None)
            return True
        except self._exception as error:
            return not _missing_bucket(str(error))

    def _error(self, error: Exception, key: str, action: str) -> StorageError:
        """One clear line for the failures users meet: no bucket, no access, no endpoint."""
        where = self._where(key)
        text = str(error)
        lowered = text.lower()
        if _missing_bucket(text):
            return StorageError(f"{where}: bucket '{self.bucket}' does not exist")
        if any(word in lowered for word in ("accessdenied", "access denied", "forbidden", "invalidaccesskeyid",
                                            "signaturedoesnotmatch", "403")):
            return StorageError(f"{where}: access denied; check the AWS credentials and bucket policy")
        if "credentials" in lowered:
            return StorageError(f"{where}: no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        if any(word in lowered for word in ("aws_io_", "socket", "connection", "dns", "host")):
            return StorageError(f"{where}: cannot reach the S3 endpoint {self.endpoint or 'of AWS'}"
                                f" ({text.splitlines()[0][:200]}); check AWS_ENDPOINT_URL")
        if "not found" in lowered or "key does not exist" in lowered:
            if not self._bucket_exists():
                return StorageError(f"{where}: bucket '{self.bucket}' does not exist")
            return StorageError(f"{where}: no such object")
        return StorageError(f"{where}: {action} failed: {text.splitlines()[0][:300] if text else type(error).__name__}")

    # -- the Storage protocol -------------------------------------------------------------------

    def read(self, key: str) -> bytearray:
        from s3torchconnector import S3ReaderConstructor

        name = self._key(key)
        try:
            for _ in range(5):
                head = self.client.head_object(self.bucket, name)
                buffer = bytearray(head.size)
                if head.size:
                    # No reader buffer: the bytes go straight from the CRT's parts into ours.
                    reader = self.client.get_object(self.bucket, name, object_info=head,
                                                    reader_constructor=S3ReaderConstructor.range_based(buffer_size=0))
                    got = reader.readinto(buffer)
                    if got != head.size:
                        continue  # shorter than HEAD said: replaced while we read
                if head.size <= self.part_size:  # one GET returns one version
                    return buffer
                if self.client.head_object(self.bucket, name).etag == head.etag:
                    return buffer
        except self._exception as error:
            raise self._error(error, key, "read") from error
        raise StorageError(f"{self._where(key)}: the object kept changing while it was being read")

    def write(self, key: str, data: bytes | bytearray | memoryview | Iterable[Any]) -> None:
        chunks = [memoryview(data).cast("B")] if isinstance(data, (bytes, bytearray, memoryview)) else [
            memoryview(chunk).cast("B") for chunk in data
        ]
        name = self._key(key)
        try:
            writer = self.client.put_object(self.bucket, name)
            # The stream itself, completed only below: S3Writer would complete it from its finalizer
            # even after an error, making a partial object visible.
            stream = writer.stream
            writer._closed = True
            for chunk in chunks:
                for start in range(0, chunk.nbytes, self.part_size):
                    # The client takes bytes only: one part-sized copy at a time, never the whole object.
                    stream.write(chunk[start : start + self.part_size].tobytes())
            stream.close()  # the commit point: the object appears whole, or not at all
        except self._exception as error:
            raise self._error(error, key, "write") from error

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(self.bucket, self._key(key))
            return True
        except self._exception as error:
            lowered = str(error).lower()
            if ("not found" in lowered or "key does not exist" in lowered) and not _missing_bucket(str(error)):
                if not self._bucket_exists():
                    raise StorageError(f"{self._where(key)}: bucket '{self.bucket}' does not exist") from None
                return False
            raise self._error(error, key, "exists") from error

    def list(self, prefix: str = "") -> list[str]:
        base = self._key(prefix)
        if base and not base.endswith("/"):
            base += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            for page in self.client.list_objects(self.bucket, base):
                keys.extend(info.key[strip:] for info in page.object_info)
        except self._exception as error:
            raise self._error(error, prefix, "list") from error
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(self.bucket, self._key(key))
        except self._exception as error:
            raise self._error(error, key, "delete") from error


def _missing_bucket(text: str) -> bool:
    lowered = text.lower()
    return "bucket does not exist" in lowered or "nosuchbucket" in lowered
