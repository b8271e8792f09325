""":class:`HwsignRequestsAuth`: a ``requests`` auth that signs every prepared request.

    session.auth = HwsignRequestsAuth(key_id="hk1_…", audience="payments")

requests calls an auth once per prepared request. A request re-sent without being prepared
again — urllib3's own retries (``HTTPAdapter(max_retries=Retry(...))``) or a redirect — keeps
its first signature and nonce, and a verifier refuses it (``replayed_nonce``): retry by sending
``session.send(session.prepare_request(request))`` or with httpx and :class:`hwsign.HwsignAuth`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from requests.models import PreparedRequest

from .agent import AgentClient
from .body import DEFAULT_MAX_SPOOL_BYTES, EMPTY_SHA256, Spool, hash_file, sha256_hex
from .challenge import ChallengeHook, challenge_of, session_revoked
from .describe import apply, describe, resolve_authority, strip_signature_headers

__all__ = ["HwsignRequestsAuth"]

#: Attribute of a prepared request naming the key that signed it (the agent's answer).
_SIGNED_BY = "_hwsign_signed_by"


class HwsignRequestsAuth(AuthBase):
    """Signs ``requests`` requests with the agent key ``key_id`` for the API named ``audience``.

    Arguments as :class:`hwsign.HwsignAuth` (``signed_headers``, ``socket_path``, ``agent_uid``,
    ``agent``, ``max_spool_bytes``, ``on_challenge``). A ``str`` body is sent as ISO-8859-1,
    as http.client sends it; it is converted to those bytes before hashing. A ``session_revoked``
    answer to a request a delegated session signed is signed by a new session and sent once more,
    as :class:`hwsign.HwsignAuth` does (bodies in memory; a streamed body's answer is returned).
    """

    def __init__(
        self,
        key_id: str,
        audience: str,
        *,
        signed_headers: Sequence[str] = (),
        socket_path: Optional[str] = None,
        agent_uid: Optional[int] = None,
        agent: Optional[AgentClient] = None,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        on_challenge: Optional[ChallengeHook] = None,
    ) -> None:
        self.key_id = key_id
        self.audience = audience
        self.signed_headers = list(signed_headers)
        self.agent = agent if agent is not None else AgentClient(socket_path, agent_uid=agent_uid)
        self._max_spool = max_spool_bytes
        self._on_challenge = on_challenge

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        body_sha256 = self._body_sha256(request)
        self._sign(request, body_sha256)
        request.register_hook("response", self._check_challenge)  # type: ignore[no-untyped-call]
        return request

    def _sign(self, request: PreparedRequest, body_sha256: str) -> None:
        strip_signature_headers(request.headers)
        url = urlsplit(request.url or "")
        authority = resolve_authority(url.scheme, url.netloc, request.headers.get("host"))
        if "host" in request.headers:
            request.headers["Host"] = authority
        signing = describe(
            key_id=self.key_id,
            audience=self.audience,
            method=request.method or "GET",
            authority=authority,
            raw_path=request.path_url,
            headers=request.headers.items(),
            body_sha256=body_sha256,
            signed_headers=self.signed_headers,
        )
        signed = self.agent.sign(signing)
        apply(request.headers, signed)
        # Which key signed: a delegated session key's id when the agent signs in delegated mode.
        setattr(request, _SIGNED_BY, signed["key_id"])

    def _body_sha256(self, request: PreparedRequest) -> str:
        body: Any = request.body
        if body is None:
            return EMPTY_SHA256
        if isinstance(body, str):
            body = body.encode("iso-8859-1")
            request.body = body
        if isinstance(body, (bytes, bytearray)):
            return sha256_hex(bytes(body))
        seekable = getattr(body, "seekable", None)
        if hasattr(body, "read") and callable(seekable) and seekable():
            return hash_file(body)[0]
        # A one-shot body (a generator, a pipe): copy it while hashing, send the copy.
        chunks = iter(lambda: body.read(64 * 1024), b"") if hasattr(body, "read") else body
        spool = Spool(self._max_spool).fill(chunks)
        request.body = spool.chunks()  # type: ignore[assignment]  # requests sends iterables chunked
        if "Content-Length" not in request.headers:
            request.headers["Transfer-Encoding"] = "chunked"
        return spool.sha256

    def _check_challenge(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        prepared = response.request
        signed_by = getattr(prepared, _SIGNED_BY, None)
        if (
            _replayable(prepared)
            and signed_by is not None
            and signed_by != self.key_id
            and session_revoked(response.status_code, response.headers.get("www-authenticate"))
        ):
            # An administrator ended the delegated session that signed: the agent forgets it and
            # the request is signed by a new session and sent once more.
            self.agent.end_session(self.key_id, self.audience, signed_by)
            response = self._resend(response, **kwargs)
        challenge = challenge_of(response.status_code, response.headers.get("www-authenticate"))
        if challenge is None:
            return response
        if (
            self._on_challenge is not None
            and _replayable(response.request)
            and self._on_challenge(challenge)
        ):
            again = self._resend(response, **kwargs)
            again_challenge = challenge_of(again.status_code, again.headers.get("www-authenticate"))
            if again_challenge is None:
                return again
            response, challenge = again, again_challenge
        challenge.body = response.content
        raise challenge

    def _resend(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        """Signs a copy of the answered request again and sends it on the same adapter."""
        retry = response.request.copy()
        self._sign(retry, self._body_sha256(retry))
        response.content  # noqa: B018 - drain the answer so its connection can be reused
        response.close()
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


def _replayable(prepared: Optional[PreparedRequest]) -> bool:
    """A request whose body can be sent again: none, or bytes in memory."""
    return prepared is not None and (
        prepared.body is None or isinstance(prepared.body, (bytes, bytearray))
    )
