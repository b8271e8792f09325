"""Clients of the local hwsign agent (API v1: HTTP/1.1 + JSON on a Unix socket).

:class:`AgentClient` blocks; :class:`AsyncAgentClient` runs on asyncio. Both read the listening
process's uid before sending anything (see :mod:`hwsign.peer`), bound every answer and put a
deadline on every call.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any, List, Optional, TypedDict, cast

from .errors import AgentUnavailableError, HwsignError
from .peer import check_listener, trusted_uids
from .wire import MAX_RESPONSE_BYTES, ResponseParser, encode_request

__all__ = [
    "SOCKET_ENV",
    "AGENT_UID_ENV",
    "DEFAULT_TIMEOUT",
    "default_socket_path",
    "AgentClient",
    "AsyncAgentClient",
    "HeaderField",
    "SignRequest",
    "SignResponse",
    "KeyInfo",
]

#: Environment variable naming the agent socket (the same one the agent and the Rust client read).
SOCKET_ENV = "HWSIGN_AGENT_SOCK"
#: Environment variable naming the agent's uid when it is neither the caller's own nor root.
AGENT_UID_ENV = "HWSIGN_AGENT_UID"
#: Deadline of one call in seconds, connection included (a TPM signature on a slow chip plus a
#: queue of callers can take seconds).
DEFAULT_TIMEOUT = 30.0
_READ_CHUNK = 64 * 1024


class HeaderField(TypedDict):
    """A header of a signing request or answer."""

    name: str
    value: str


class _SignRequestRequired(TypedDict):
    key_id: str
    audience: str
    method: str
    authority: str
    path: str
    query: str
    headers: List[HeaderField]
    body_sha256: str
    signed_headers: List[str]


class SignRequest(_SignRequestRequired, total=False):
    """The body of ``POST /v1/sign``: the request's parts, never a bare digest."""

    presign_expires_secs: int


class SignResponse(TypedDict):
    """The agent's answer to ``POST /v1/sign``: headers to add in order (``authorization`` last),
    query parameters (presigned URLs), the key that signed and the date signed."""

    headers: List[HeaderField]
    query_params: List[HeaderField]
    key_id: str
    date: str


class KeyInfo(TypedDict):
    """A key held by the agent."""

    id: str
    label: str
    backend: str
    level: str
    public_key_pem: str
    created_unix: int


def default_socket_path() -> str:
    """The socket a user's agent listens on by default, as the agent computes it:
    ``$HWSIGN_AGENT_SOCK``, else ``$XDG_RUNTIME_DIR/hwsign/agent.sock``, else
    ``$XDG_STATE_HOME/hwsign/agent.sock`` (``~/.local/state/hwsign/agent.sock``)."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "hwsign", "agent.sock")
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            raise HwsignError(
                "no agent socket: set HWSIGN_AGENT_SOCK, XDG_RUNTIME_DIR or HOME, or pass a path"
            )
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "hwsign", "agent.sock")


def _agent_uid_from_env() -> Optional[int]:
    text = os.environ.get(AGENT_UID_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise HwsignError(f"{AGENT_UID_ENV} is not a uid: {text[:32]!r}")
    return int(text)


class _Settings:
    def __init__(
        self,
        socket_path: Optional[str],
        agent_uid: Optional[int],
        timeout: float,
        max_response_bytes: int,
    ) -> None:
        self.socket_path = socket_path if socket_path is not None else default_socket_path()
        uid = agent_uid if agent_uid is not None else _agent_uid_from_env()
        self.trusted = trusted_uids(uid)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes


#: The agent's call that forgets a delegated session a verifier ended.
END_SESSION_PATH = "/v1/sessions/end"


def _end_session_body(key_id: str, audience: str, session_key_id: str) -> dict[str, str]:
    return {"key_id": key_id, "audience": audience, "session_key_id": session_key_id}


class AgentClient:
    """A blocking client of the agent. Each call opens its own connection, so one client may be
    shared between threads.

    ``socket_path`` defaults to :func:`default_socket_path`; ``agent_uid`` (default:
    ``$HWSIGN_AGENT_UID``) is trusted as the agent's uid besides the caller's own and root.
    """

    def __init__(
        self,
        socket_path: Optional[str] = None,
        *,
        agent_uid: Optional[int] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._settings = _Settings(socket_path, agent_uid, timeout, max_response_bytes)

    @property
    def socket_path(self) -> str:
        """The socket this client talks to."""
        return self._settings.socket_path

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        return cast("dict[str, Any]", self.call("GET", "/v1/status"))

    def list_keys(self) -> List[KeyInfo]:
        """``GET /v1/keys``."""
        return cast(List[KeyInfo], self.call("GET", "/v1/keys")["keys"])

    def create_key(self, backend: str, label: str) -> KeyInfo:
        """``POST /v1/keys``: a new key in ``backend`` (e.g. ``software``) labelled ``label``."""
        return cast(KeyInfo, self.call("POST", "/v1/keys", {"backend": backend, "label": label}))

    def sign(self, request: SignRequest) -> SignResponse:
        """``POST /v1/sign``: the agent canonicalizes the described request and signs it."""
        return cast(SignResponse, self.call("POST", "/v1/sign", request))

    def end_session(self, key_id: str, audience: str, session_key_id: str) -> bool:
        """``POST /v1/sessions/end``: the agent forgets the delegated session ``session_key_id``
        of ``key_id`` for ``audience`` (a verifier answered ``session_revoked``), so its next
        signature starts a new session. True if that session was the current one."""
        body = _end_session_body(key_id, audience, session_key_id)
        return bool(self.call("POST", END_SESSION_PATH, body)["ended"])

    def call(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        """One call of the agent API; returns the decoded JSON answer."""
        settings = self._settings
        deadline = time.monotonic() + settings.timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(settings.timeout)
            try:
                sock.connect(settings.socket_path)
            except OSError as error:
                raise AgentUnavailableError(
                    f"cannot connect to the hwsign agent at {settings.socket_path}"
                ) from error
            check_listener(sock, settings.socket_path, settings.trusted)
            parser = ResponseParser(settings.max_response_bytes)
            try:
                sock.sendall(encode_request(method, path, body))
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise socket.timeout()
                    sock.settimeout(remaining)
                    if parser.feed(sock.recv(_READ_CHUNK)):
                        break
            except OSError as error:
                raise AgentUnavailableError(
                    f"the exchange with the hwsign agent at {settings.socket_path} failed "
                    f"(deadline {settings.timeout} s)"
                ) from error
        finally:
            sock.close()
        return parser.result()


class AsyncAgentClient:
    """The asyncio twin of :class:`AgentClient` (same arguments, same methods, awaited)."""

    def __init__(
        self,
        socket_path: Optional[str] = None,
        *,
        agent_uid: Optional[int] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._settings = _Settings(socket_path, agent_uid, timeout, max_response_bytes)

    @property
    def socket_path(self) -> str:
        """The socket this client talks to."""
        return self._settings.socket_path

    async def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        return cast("dict[str, Any]", await self.call("GET", "/v1/status"))

    async def list_keys(self) -> List[KeyInfo]:
        """``GET /v1/keys``."""
        return cast(List[KeyInfo], (await self.call("GET", "/v1/keys"))["keys"])

    async def create_key(self, backend: str, label: str) -> KeyInfo:
        """``POST /v1/keys``."""
        body = {"backend": backend, "label": label}
        return cast(KeyInfo, await self.call("POST", "/v1/keys", body))

    async def sign(self, request: SignRequest) -> SignResponse:
        """``POST /v1/sign``."""
        return cast(SignResponse, await self.call("POST", "/v1/sign", request))

    async def end_session(self, key_id: str, audience: str, session_key_id: str) -> bool:
        """``POST /v1/sessions/end`` (see :meth:`AgentClient.end_session`)."""
        body = _end_session_body(key_id, audience, session_key_id)
        return bool((await self.call("POST", END_SESSION_PATH, body))["ended"])

    async def call(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        """One call of the agent API; returns the decoded JSON answer."""
        settings = self._settings
        try:
            return await asyncio.wait_for(self._exchange(method, path, body), settings.timeout)
        except asyncio.TimeoutError as error:
            raise AgentUnavailableError(
                f"the hwsign agent at {settings.socket_path} did not answer within "
                f"{settings.timeout} s"
            ) from error

    async def _exchange(self, method: str, path: str, body: Optional[Any]) -> Any:
        settings = self._settings
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, settings.socket_path)
            except OSError as error:
                raise AgentUnavailableError(
                    f"cannot connect to the hwsign agent at {settings.socket_path}"
                ) from error
            check_listener(sock, settings.socket_path, settings.trusted)
            parser = ResponseParser(settings.max_response_bytes)
            try:
                await loop.sock_sendall(sock, encode_request(method, path, body))
                while not parser.feed(await loop.sock_recv(sock, _READ_CHUNK)):
                    pass
            except OSError as error:
                raise AgentUnavailableError(
                    f"the exchange with the hwsign agent at {settings.socket_path} failed"
                ) from error
        finally:
            sock.close()
        return parser.result()
