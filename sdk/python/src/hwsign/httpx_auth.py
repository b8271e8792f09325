""":class:`HwsignAuth`: an ``httpx.Auth`` that signs every request through the agent.

    client = httpx.Client(auth=HwsignAuth(key_id="hk1_…", audience="payments"))

Works with ``httpx.Client`` and ``httpx.AsyncClient`` (asyncio). Each request that passes
through the auth flow is signed anew — a fresh date, nonce and signature — so retries made by an
SDK above httpx (the OpenAI SDK builds and sends a new request per attempt) are each signed, and
a verifier accepts them. Bodies are hashed without being loaded whole (see :mod:`hwsign.body`).
"""

from __future__ import annotations

import inspect
from typing import AsyncGenerator, AsyncIterator, Generator, Iterator, List, Optional, Sequence, Union

import httpx

from .agent import AgentClient, AsyncAgentClient, SignRequest, SignResponse
from .body import DEFAULT_MAX_SPOOL_BYTES, EMPTY_SHA256, Spool, hash_chunks, sha256_hex
from .challenge import AsyncChallengeHook, ChallengeHook, challenge_of, session_revoked
from .describe import apply, describe, resolve_authority, strip_signature_headers
from .errors import VerifierChallenge

__all__ = ["HwsignAuth"]


class _SpoolStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A spooled body as an httpx stream that can be sent any number of times."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def __iter__(self) -> Iterator[bytes]:
        return self._spool.chunks()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._spool.achunks()

    def close(self) -> None:
        self._spool.close()

    async def aclose(self) -> None:
        self._spool.close()


class HwsignAuth(httpx.Auth):
    """Signs httpx requests with the agent key ``key_id`` for the API named ``audience``.

    - ``signed_headers``: header names to sign beyond those HWS1 always signs.
    - ``agent`` / ``async_agent``: clients to use (default: the socket from the environment,
      see :func:`hwsign.default_socket_path`; ``socket_path`` and ``agent_uid`` override it).
    - ``max_spool_bytes``: bound of a one-shot streaming body copied to be hashed.
    - ``on_challenge``: called with an :class:`~hwsign.AttestationRequired` or
      :class:`~hwsign.StepUpRequired` challenge; if it returns True (it handled it, e.g.
      re-attested the key), the request is signed and sent once more. Without a hook, or if it
      returns False, the challenge is raised. In the async flow the hook may be a coroutine
      function.

    A ``401 session_revoked`` answer to a request signed by a delegated session key (an
    administrator ended the session) is handled without a hook: the agent forgets that session
    and the request is signed by a new one and sent once more; a revoked device's new session is
    refused in turn (``device_revoked``), and that answer is returned.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        key_id: str,
        audience: str,
        *,
        signed_headers: Sequence[str] = (),
        socket_path: Optional[str] = None,
        agent_uid: Optional[int] = None,
        agent: Optional[AgentClient] = None,
        async_agent: Optional[AsyncAgentClient] = None,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        on_challenge: Optional[Union[ChallengeHook, AsyncChallengeHook]] = None,
    ) -> None:
        self.key_id = key_id
        self.audience = audience
        self.signed_headers: List[str] = list(signed_headers)
        self._socket_path = socket_path
        self._agent_uid = agent_uid
        self._agent = agent
        self._async_agent = async_agent
        self._max_spool = max_spool_bytes
        self._on_challenge = on_challenge

    @property
    def agent(self) -> AgentClient:
        """The blocking agent client (created on first use)."""
        if self._agent is None:
            self._agent = AgentClient(self._socket_path, agent_uid=self._agent_uid)
        return self._agent

    @property
    def async_agent(self) -> AsyncAgentClient:
        """The asyncio agent client (created on first use)."""
        if self._async_agent is None:
            self._async_agent = AsyncAgentClient(self._socket_path, agent_uid=self._agent_uid)
        return self._async_agent

    # The flows -----------------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        body_sha256 = self._body_sha256(request)
        signed = self.agent_sign(request, body_sha256)
        response = yield request
        if self._renew_session(signed, response):
            self.agent.end_session(self.key_id, self.audience, signed["key_id"])
            self.agent_sign(request, body_sha256)
            response = yield request
        challenge = self._challenge(response)
        if challenge is None:
            return
        if self._on_challenge is not None and self._on_challenge(challenge) is True:
            self.agent_sign(request, body_sha256)
            response = yield request
            challenge = self._challenge(response)
            if challenge is None:
                return
        challenge.body = response.read()
        raise challenge

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        body_sha256 = await self._abody_sha256(request)
        signed = await self.async_agent_sign(request, body_sha256)
        response = yield request
        if self._renew_session(signed, response):
            await self.async_agent.end_session(self.key_id, self.audience, signed["key_id"])
            await self.async_agent_sign(request, body_sha256)
            response = yield request
        challenge = self._challenge(response)
        if challenge is None:
            return
        if self._on_challenge is not None:
            handled = self._on_challenge(challenge)
            if inspect.isawaitable(handled):
                handled = await handled
            if handled is True:
                await self.async_agent_sign(request, body_sha256)
                response = yield request
                challenge = self._challenge(response)
                if challenge is None:
                    return
        challenge.body = await response.aread()
        raise challenge

    # Signing ---------------------------------------------------------------------------------

    def agent_sign(self, request: httpx.Request, body_sha256: str) -> SignResponse:
        """Signs ``request`` (whose body hashes to ``body_sha256``) with the blocking client;
        returns the agent's answer."""
        signing = self._describe(request, body_sha256)
        signed = self.agent.sign(signing)
        apply(request.headers, signed)
        return signed

    async def async_agent_sign(self, request: httpx.Request, body_sha256: str) -> SignResponse:
        """Signs ``request`` with the asyncio client; returns the agent's answer."""
        signing = self._describe(request, body_sha256)
        signed = await self.async_agent.sign(signing)
        apply(request.headers, signed)
        return signed

    def _renew_session(self, signed: SignResponse, response: httpx.Response) -> bool:
        """A ``session_revoked`` answer to a request a delegated session key signed (the agent
        answers that key's id, not ``key_id``): the session is ended, sign with a new one. A
        strict signature has no session to renew; the answer is returned as it is."""
        return signed["key_id"] != self.key_id and session_revoked(
            response.status_code, response.headers.get("www-authenticate")
        )

    def _describe(self, request: httpx.Request, body_sha256: str) -> SignRequest:
        strip_signature_headers(request.headers)
        url = request.url
        authority = resolve_authority(
            url.scheme, url.netloc.decode("ascii"), request.headers.get("host")
        )
        # httpx writes the Host header it holds: make it the signed spelling.
        request.headers["host"] = authority
        return describe(
            key_id=self.key_id,
            audience=self.audience,
            method=request.method,
            authority=authority,
            raw_path=url.raw_path.decode("ascii"),
            headers=request.headers.multi_items(),
            body_sha256=body_sha256,
            signed_headers=self.signed_headers,
        )

    # Bodies ----------------------------------------------------------------------------------

    def _body_sha256(self, request: httpx.Request) -> str:
        known = self._known_body_sha256(request)
        if known is not None:
            return known
        if isinstance(request.stream, httpx.SyncByteStream) and _rewindable(request.stream):
            return hash_chunks(request.stream)[0]
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise TypeError("an async request body cannot be sent by a sync httpx client")
        spool = Spool(self._max_spool).fill(request.stream)
        request.stream = _SpoolStream(spool)
        return spool.sha256

    async def _abody_sha256(self, request: httpx.Request) -> str:
        known = self._known_body_sha256(request)
        if known is not None:
            return known
        stream = request.stream
        if isinstance(stream, httpx.SyncByteStream) and _rewindable(stream):
            return hash_chunks(stream)[0]
        spool = Spool(self._max_spool)
        if isinstance(stream, httpx.AsyncByteStream):
            await spool.afill(stream)
        else:
            spool.fill(stream)
        request.stream = _SpoolStream(spool)
        return spool.sha256

    @staticmethod
    def _known_body_sha256(request: httpx.Request) -> Optional[str]:
        """The hash of a body already in memory (or spooled by an earlier pass), else None."""
        if isinstance(request.stream, httpx.ByteStream):
            return sha256_hex(request.read())
        if isinstance(request.stream, _SpoolStream):
            return request.stream._spool.sha256
        if getattr(request, "_content", None) is not None:
            return sha256_hex(request.content)
        if request.headers.get("content-length") == "0":
            return EMPTY_SHA256
        return None

    @staticmethod
    def _challenge(response: httpx.Response) -> Optional[VerifierChallenge]:
        return challenge_of(response.status_code, response.headers.get("www-authenticate"))


def _rewindable(stream: object) -> bool:
    """httpx's multipart stream re-renders its fields (re-seeking files) on every iteration."""
    try:
        from httpx._multipart import MultipartStream
    except ImportError:  # pragma: no cover - a future httpx without it: spool instead
        return False
    if not isinstance(stream, MultipartStream):
        return False
    # A file without seek() cannot be rendered twice: spool such uploads.
    for field in getattr(stream, "fields", []):
        file = getattr(field, "file", None)
        if hasattr(field, "file") and not isinstance(file, (str, bytes)):
            seekable = getattr(file, "seekable", None)
            if not hasattr(file, "seek") or (callable(seekable) and not seekable()):
                return False
    return True
