"""HTTP/1.1 with JSON bodies, as the agent API speaks it, without I/O: the request bytes of one
call and an incremental parser of one answer. The sync and async clients share it; each call uses
its own connection and asks the agent to close it (``Connection: close``)."""

from __future__ import annotations

import json
from typing import Any, Optional

from .errors import AgentError, AgentProtocolError

#: Largest answer accepted (attestation evidence, the largest answer, is a few KiB).
MAX_RESPONSE_BYTES = 1024 * 1024
#: Largest answer head (status line and headers).
MAX_HEAD_BYTES = 16 * 1024


def encode_request(method: str, path: str, body: Optional[Any]) -> bytes:
    """The bytes of one agent call: ``method path`` with ``body`` as JSON when given."""
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: localhost",
        "Accept: application/json",
        "Connection: close",
        f"Content-Length: {len(payload)}",
    ]
    if body is not None:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + payload


class ResponseParser:
    """Collects one answer from the bytes fed to it; :meth:`feed` returns True once complete.

    Bodies are delimited by ``Content-Length`` or by the end of the connection; both are bounded
    by :data:`MAX_RESPONSE_BYTES`.
    """

    def __init__(self, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_bytes
        self.status: Optional[int] = None
        self._length: Optional[int] = None
        self._body_start = 0

    def feed(self, data: bytes) -> bool:
        """Adds ``data`` (``b""`` at the end of the connection); True once the answer is whole."""
        if not data:
            if self.status is None:
                raise AgentProtocolError("the agent closed the connection before answering")
            if self._length is not None and len(self._buffer) - self._body_start < self._length:
                raise AgentProtocolError("the agent's answer was cut short")
            return True
        self._buffer += data
        if len(self._buffer) > self._max + MAX_HEAD_BYTES:
            raise AgentProtocolError(f"the agent's answer exceeds {self._max} bytes")
        if self.status is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise AgentProtocolError("the agent's answer head is too large")
                return False
            self._parse_head(bytes(self._buffer[:end]))
            self._body_start = end + 4
        return self._length is not None and len(self._buffer) - self._body_start >= self._length

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise AgentProtocolError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
        status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "transfer-encoding":
                raise AgentProtocolError("the agent's answer uses a transfer coding")
            if name == "content-length":
                value = value.strip()
                if not value.isdigit():
                    raise AgentProtocolError("the agent's answer has a bad Content-Length")
                length = int(value)
                if length > self._max:
                    raise AgentProtocolError(f"the agent's answer exceeds {self._max} bytes")
                self._length = length
        self.status = status

    @property
    def body(self) -> bytes:
        """The body received (whole once :meth:`feed` returned True)."""
        end = None if self._length is None else self._body_start + self._length
        return bytes(self._buffer[self._body_start : end])

    def result(self) -> Any:
        """The decoded JSON answer; an agent refusal raises :class:`AgentError`."""
        status = self.status if self.status is not None else 0
        try:
            decoded = json.loads(self.body)
        except ValueError as error:
            raise AgentProtocolError(
                f"HTTP {status} with a body that is not JSON: {self.body[:200]!r}"
            ) from error
        if 200 <= status < 300:
            return decoded
        detail = decoded.get("error") if isinstance(decoded, dict) else None
        if (
            isinstance(detail, dict)
            and isinstance(detail.get("code"), str)
            and isinstance(detail.get("message"), str)
        ):
            raise AgentError(detail["code"], detail["message"], status)
        raise AgentProtocolError(f"HTTP {status} without an agent error body: {self.body[:200]!r}")
