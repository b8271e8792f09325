"""Exceptions of the hwsign SDK.

Every exception derives from :class:`HwsignError`. A refusal by the agent keeps the agent's stable
error code (``AgentError.code``, e.g. ``"unknown_key"``, ``"key_not_permitted"``); a challenge by
the verifier (``401`` with ``WWW-Authenticate: HWS1 error="attestation_required"`` or
``"step_up_required"``) is a :class:`VerifierChallenge` subclass carrying the code and the
challenge's parameters (such as its ``nonce``).
"""

from __future__ import annotations

from typing import Mapping, Optional

__all__ = [
    "HwsignError",
    "AgentError",
    "AgentUnavailableError",
    "UntrustedAgentError",
    "AgentProtocolError",
    "SigningRequestError",
    "BodyTooLargeError",
    "VerifierChallenge",
    "AttestationRequired",
    "StepUpRequired",
]


class HwsignError(Exception):
    """Base class of every hwsign SDK error."""


class AgentError(HwsignError):
    """The agent refused the call with ``{"error": {"code", "message"}}``.

    ``code`` is one of the agent API's documented codes (docs/PROTOCOL.md §10), for example
    ``unknown_key``, ``key_not_permitted``, ``invalid_request``, ``backend_unavailable``,
    ``pin_locked``, ``unavailable``, ``too_many_connections``; with a FIDO2 security key also
    ``no_security_key``, ``touch_timeout``, ``operation_denied`` and ``pin_incorrect``.
    """

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"the hwsign agent refused the call ({code}, HTTP {status}): {message}")
        self.code = code
        self.message = message
        self.status = status


class AgentUnavailableError(HwsignError):
    """The agent's socket could not be reached, or the exchange broke off or timed out.

    The underlying ``OSError`` (if any) is the ``__cause__``.
    """


class UntrustedAgentError(HwsignError):
    """The process listening on the agent's socket runs as a uid that is not trusted to be the
    agent (not the caller's own uid, not root, not the configured agent uid). Nothing was sent on
    the connection: someone may have put their own socket in the agent's place."""

    def __init__(self, path: str, uid: int, trusted: tuple[int, ...]) -> None:
        super().__init__(
            f"refusing the process listening on {path}: it runs as uid {uid}, not as a trusted "
            f"agent uid {list(trusted)} (set agent_uid=... or HWSIGN_AGENT_UID)"
        )
        self.path = path
        self.uid = uid
        self.trusted = trusted


class AgentProtocolError(HwsignError):
    """The agent's answer is not what the agent API defines (bad status line, bad JSON, too
    large)."""


class SigningRequestError(HwsignError):
    """The request cannot be described to the agent unambiguously (no host, a Host header naming
    another server than the URL, user information in the URL, a header that is not text)."""


class BodyTooLargeError(HwsignError):
    """A request body that had to be spooled to be hashed exceeds the configured bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the spooling limit of {limit} bytes")
        self.limit = limit


class VerifierChallenge(HwsignError):
    """The verifier answered ``401`` with a challenge that signing again cannot satisfy by
    itself: the key must be re-attested (:class:`AttestationRequired`) or a stronger key must
    sign (:class:`StepUpRequired`).

    ``code`` is the ``error`` parameter of ``WWW-Authenticate: HWS1 ...``; ``params`` holds every
    parameter of that challenge (e.g. ``nonce``); ``status`` is the HTTP status and ``body`` the
    answer's body when it was read (else ``None``).
    """

    def __init__(
        self,
        code: str,
        params: Mapping[str, str],
        status: int = 401,
        body: Optional[bytes] = None,
    ) -> None:
        super().__init__(f"the verifier asks for {code} (HTTP {status})")
        self.code = code
        self.params = dict(params)
        self.status = status
        self.body = body

    @property
    def nonce(self) -> Optional[str]:
        """The challenge's ``nonce`` parameter, if it has one."""
        return self.params.get("nonce")


class AttestationRequired(VerifierChallenge):
    """``401 attestation_required``: the verifier wants fresh attestation evidence for the key
    (bound to ``nonce``) before it accepts more requests signed by it."""


class StepUpRequired(VerifierChallenge):
    """``401 step_up_required``: the route needs a key of a higher level (or a fresh user
    presence) than the one that signed."""


CHALLENGES: dict[str, type[VerifierChallenge]] = {
    "attestation_required": AttestationRequired,
    "step_up_required": StepUpRequired,
}
