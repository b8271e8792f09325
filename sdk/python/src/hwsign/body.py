"""The body hash, computed on the caller's side (the agent never sees bodies), in chunks: a body
of any size is hashed with flat memory.

A body that can be read again (bytes, a seekable file, httpx's multipart stream) is hashed by
reading it once, then sent as it is. A body that can be read only once (a generator, a pipe) is
copied while it is hashed into a temporary file — in memory up to :data:`SPOOL_MEMORY_BYTES`, on
disk beyond — and the request then sends that copy. The copy is bounded (``max_spool_bytes``,
default :data:`DEFAULT_MAX_SPOOL_BYTES`): a longer body raises :class:`BodyTooLargeError` before
anything is signed or sent.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO, AsyncIterable, AsyncIterator, Iterable, Iterator, Tuple

from .errors import BodyTooLargeError

#: Chunk size of hashing and of sending a spooled body.
CHUNK = 64 * 1024
#: Spooled bodies stay in memory up to this size, then move to a temporary file.
SPOOL_MEMORY_BYTES = 1024 * 1024
#: Default bound of a spooled body.
DEFAULT_MAX_SPOOL_BYTES = 512 * 1024 * 1024
#: SHA-256 of the empty body.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_chunks(chunks: Iterable[bytes]) -> Tuple[str, int]:
    """Hashes a re-readable body chunk by chunk: (hex digest, length)."""
    digest = hashlib.sha256()
    total = 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def hash_file(file: IO[bytes]) -> Tuple[str, int]:
    """Hashes a seekable file from its current position, then puts the position back."""
    start = file.tell()
    try:
        return hash_chunks(iter(lambda: file.read(CHUNK), b""))
    finally:
        file.seek(start)


class Spool:
    """A bounded copy of a one-shot body, hashed while it is written; re-readable any number of
    times (each reading starts from the beginning)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_SPOOL_BYTES) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
        self._digest = hashlib.sha256()
        self._max = max_bytes
        self.length = 0

    def write(self, chunk: bytes) -> None:
        """Appends ``chunk``; raises :class:`BodyTooLargeError` past the bound."""
        if isinstance(chunk, str):
            chunk = chunk.encode()
        self.length += len(chunk)
        if self.length > self._max:
            self.close()
            raise BodyTooLargeError(self._max)
        self._digest.update(chunk)
        self._file.write(chunk)

    def fill(self, chunks: Iterable[bytes]) -> "Spool":
        """Writes every chunk of ``chunks``."""
        for chunk in chunks:
            self.write(chunk)
        return self

    async def afill(self, chunks: AsyncIterable[bytes]) -> "Spool":
        """Writes every chunk of the async iterable ``chunks``."""
        async for chunk in chunks:
            self.write(chunk)
        return self

    @property
    def sha256(self) -> str:
        """Lower-case hex SHA-256 of what was written."""
        return self._digest.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        """The body again, from the start, in chunks."""
        self._file.seek(0)
        while True:
            chunk = self._file.read(CHUNK)
            if not chunk:
                return
            yield chunk

    async def achunks(self) -> AsyncIterator[bytes]:
        """:meth:`chunks` for async senders (a local file: each read is short)."""
        for chunk in self.chunks():
            yield chunk

    def close(self) -> None:
        """Frees the copy."""
        self._file.close()
