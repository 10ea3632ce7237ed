"""Uploads: streamed from the request to a content-addressed store, hashed on the way in.

A file is never held whole in memory: each chunk of the multipart body goes to a temporary file
while SHA-256 and MD5 are updated. The caller checks that the ESP may add a file to the report
(before the file streams, when the form names the report first, as CyberTipline clients do) and
only then keeps it (`FileStore.keep`: moved to <root>/<sha256[:2]>/<sha256>, the same content
stored once); a refused upload's temporary file is removed, so nothing refused is kept.
"""

import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 1024
# Uploaded files are report content: readable by intake's user only, whatever its umask.
PRIVATE_FILE, PRIVATE_FOLDER = 0o600, 0o700
MAX_FIELDS = 16  # an upload form has an id and a file; a few more are tolerated


class UploadTooLarge(Exception):
    pass


class BadUpload(Exception):
    """The multipart body is malformed or not what /upload takes."""


@dataclass(frozen=True)
class Stored:
    sha256: str
    md5: str
    size: int
    path: Path


@dataclass(frozen=True)
class Received:
    """A file streamed to a temporary place, hashed, not kept yet."""

    file_id: str
    sha256: str
    md5: str
    size: int
    tmp: Path
    filename: str | None


class Sink:
    """One file on its way into the store."""

    def __init__(self, store: "FileStore", limit: int) -> None:
        self._store = store
        self._limit = limit
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        store.tmp.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        self._path = store.tmp / secrets.token_hex(16)
        self._file: IO[bytes] = os.fdopen(
            os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise UploadTooLarge(f"the file is larger than {self._limit} bytes")
        self._sha256.update(data)
        self._md5.update(data)
        self._file.write(data)

    def close(self, filename: str | None) -> Received:
        self._file.close()
        return Received(secrets.token_hex(16), self._sha256.hexdigest(), self._md5.hexdigest(),
                        self.size, self._path, filename)

    def discard(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def keep(self, received: Received) -> Stored:
        final = self.path_of(received.sha256)
        final.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        # Same content, same name: replacing an existing copy changes nothing.
        os.replace(received.tmp, final)
        return Stored(received.sha256, received.md5, received.size, final)

    @staticmethod
    def discard(received: Received) -> None:
        received.tmp.unlink(missing_ok=True)


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file: Received | None = None


async def receive(
    chunks: AsyncIterator[bytes], content_type: str, store: FileStore, limit: int,
    before_file: Callable[[dict[str, str]], Awaitable[None]] | None = None,
) -> Upload:
    """Parse a multipart/form-data body as it arrives: small fields in memory, the file to disk.

    `before_file(fields)` runs once, as soon as the file part starts, with the fields read so far;
    it refuses the upload by raising (nothing of it is kept)."""
    _, options = parse_options_header(content_type.encode("latin-1", "replace"))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadUpload("the multipart body has no boundary")
    upload = Upload()
    headers: dict[bytes, bytes] = {}
    name_buf, value_buf = bytearray(), bytearray()
    part: dict[str, object] = {}
    sink: Sink | None = None
    filename: str | None = None
    parts = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name_buf.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value_buf.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(name_buf).lower()] = bytes(value_buf)
        name_buf.clear()
        value_buf.clear()

    def on_headers_finished() -> None:
        nonlocal sink, filename, parts
        parts += 1
        if parts > MAX_FIELDS:
            raise BadUpload(f"more than {MAX_FIELDS} parts in the form")
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        part.clear()
        part["name"] = name
        if name == "file":
            if upload.file is not None or sink is not None:
                raise BadUpload("one file an upload")
            given = disposition.get(b"filename")
            filename = given.decode("utf-8", "replace")[:255] if given else None
            sink = Sink(store, limit)
        else:
            part["value"] = bytearray()
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if sink is not None and part.get("name") == "file":
            sink.write(data[start:end])
            return
        value = part.get("value")
        if isinstance(value, bytearray):
            value.extend(data[start:end])
            if len(value) > MAX_FIELD_BYTES:
                raise BadUpload(f"form field {part.get('name')!r} is too long")

    def on_part_end() -> None:
        nonlocal sink
        if part.get("name") == "file" and sink is not None:
            upload.file = sink.close(filename)
            sink = None
        elif isinstance(value := part.get("value"), bytearray):
            try:
                upload.fields[str(part["name"])] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadUpload(f"form field {part.get('name')!r} is not UTF-8") from None

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    checked = before_file is None
    try:
        async for chunk in chunks:
            parser.write(chunk)
            if not checked and (sink is not None or upload.file is not None):
                checked = True
                await before_file(dict(upload.fields))  # type: ignore[misc]
        parser.finalize()
    except MultipartParseError as exc:
        raise BadUpload(f"malformed multipart body: {exc}") from None
    except BaseException:
        if upload.file is not None:
            store.discard(upload.file)
        raise
    finally:
        if sink is not None:
            sink.discard()
    return upload
