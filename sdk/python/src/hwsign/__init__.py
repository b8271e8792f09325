"""hwsign: sign HTTP requests with a hardware-bound key through the local hwsign agent.

The agent (``hwsign-agent``) holds the key in a TPM, a PKCS#11 token or a file, and signs HWS1
signatures (docs/PROTOCOL.md) on request over its Unix socket; this package describes each
outgoing request to it and adds the headers it returns. Pure Python, no dependency:

- :class:`HwsignAuth` — an ``httpx.Auth`` (sync and async; every attempt signed anew), e.g. for
  the OpenAI SDK: ``OpenAI(http_client=httpx.Client(auth=HwsignAuth(key_id, audience)))``;
- :class:`HwsignRequestsAuth` — a ``requests`` auth;
- :class:`AgentClient` / :class:`AsyncAgentClient` — the agent API itself.

``HwsignAuth`` and ``HwsignRequestsAuth`` import httpx and requests on first use, so either can
be used without the other installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .agent import (
    AGENT_UID_ENV,
    SOCKET_ENV,
    AgentClient,
    AsyncAgentClient,
    KeyInfo,
    SignRequest,
    SignResponse,
    default_socket_path,
)
from .errors import (
    AgentError,
    AgentProtocolError,
    AgentUnavailableError,
    AttestationRequired,
    BodyTooLargeError,
    HwsignError,
    SigningRequestError,
    StepUpRequired,
    UntrustedAgentError,
    VerifierChallenge,
)

if TYPE_CHECKING:
    from .httpx_auth import HwsignAuth
    from .requests_auth import HwsignRequestsAuth

__version__ = "0.1.0"

__all__ = [
    "AGENT_UID_ENV",
    "SOCKET_ENV",
    "AgentClient",
    "AsyncAgentClient",
    "KeyInfo",
    "SignRequest",
    "SignResponse",
    "default_socket_path",
    "HwsignAuth",
    "HwsignRequestsAuth",
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


def __getattr__(name: str) -> Any:
    if name == "HwsignAuth":
        from .httpx_auth import HwsignAuth

        return HwsignAuth
    if name == "HwsignRequestsAuth":
        from .requests_auth import HwsignRequestsAuth

        return HwsignRequestsAuth
    raise AttributeError(f"module 'hwsign' has no attribute {name!r}")
