"""The verifier's challenges: a ``401`` whose ``WWW-Authenticate: HWS1 error="<code>", ...``
names ``attestation_required`` or ``step_up_required``. Signing again does not satisfy them by
itself, so the SDK does not resend blindly: it calls the application's hook (which may re-attest
the key, or switch to a stronger key) and resends once if the hook says so; otherwise it raises
the typed exception (:class:`~hwsign.errors.AttestationRequired`,
:class:`~hwsign.errors.StepUpRequired`).
"""

from __future__ import annotations

import re
from typing import Awaitable, Callable, Dict, Optional, Union

from .errors import CHALLENGES, VerifierChallenge

#: A hook called with the challenge; True means "handled, sign and send the request again".
ChallengeHook = Callable[[VerifierChallenge], bool]
#: The async flow's hook may also be a coroutine function.
AsyncChallengeHook = Callable[[VerifierChallenge], Union[bool, Awaitable[bool]]]

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')
_MAX_HEADER = 4096


def parse_challenge(www_authenticate: Optional[str]) -> Optional[Dict[str, str]]:
    """The parameters of an ``HWS1`` challenge, or None for anything else."""
    if not www_authenticate or len(www_authenticate) > _MAX_HEADER:
        return None
    scheme, _, rest = www_authenticate.strip().partition(" ")
    if scheme != "HWS1":
        return None
    params: Dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            return None
        quoted, token = match.group(2), match.group(3)
        params[match.group(1).lower()] = (
            re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token or ""
        )
        position = match.end()
    return params


def session_revoked(status: int, www_authenticate: Optional[str]) -> bool:
    """Whether an answer is ``401`` with ``WWW-Authenticate: HWS1 error="session_revoked"``: an
    administrator ended the delegated session the request was signed with. The SDK then has the
    agent forget that session and signs the request once more with a new one, which the verifier
    accepts only while the device itself is allowed (docs/ADMIN.md, "Sessions")."""
    if status != 401:
        return False
    params = parse_challenge(www_authenticate)
    return params is not None and params.get("error") == "session_revoked"


def challenge_of(
    status: int, www_authenticate: Optional[str], body: Optional[bytes] = None
) -> Optional[VerifierChallenge]:
    """The typed challenge of an answer, or None when it is not one the SDK handles."""
    if status != 401:
        return None
    params = parse_challenge(www_authenticate)
    if params is None:
        return None
    kind = CHALLENGES.get(params.get("error", ""))
    if kind is None:
        return None
    return kind(params["error"], params, status, body)
