"""Turning an outgoing request into the agent's signing request, and the answer back into
headers. What is described must be what the HTTP client puts on the wire: the signed host is
derived from the URL by the protocol's one rule (docs/PROTOCOL.md §2 "Signed host": lower case,
the scheme's default port left out, which is the ``Host`` header HTTP clients write), and a
``Host`` header the application set must name the same server.

Only the headers the agent signs are described to it: ``content-type`` (HWS1 signs it whenever
the request carries it) and the names the caller asked to sign. Other headers, such as an API
key in ``Authorization``, never reach the agent; ``Authorization`` and every ``X-Hws-*`` header
are replaced by the new signature.
"""

from __future__ import annotations

from typing import Iterable, List, MutableMapping, Optional, Sequence, Tuple

from .agent import HeaderField, SignRequest, SignResponse
from .errors import SigningRequestError

#: Prefix of every header hwsign adds.
HWS_HEADER_PREFIX = "x-hws-"
_DEFAULT_PORTS = {"https": "443", "http": "80"}


def signed_host(scheme: str, authority: str) -> str:
    """The ``host`` value signed for a URL with ``scheme`` and ``authority`` (``host[:port]``)."""
    if not authority or "@" in authority:
        raise SigningRequestError(
            f"the authority {authority!r} cannot be signed (empty, or with user information)"
        )
    host = authority.lower()
    default = _DEFAULT_PORTS.get(scheme.lower())
    if default is not None and host.endswith(":" + default) and not host.endswith("]"):
        host = host[: -(len(default) + 1)]
    return host


def is_signature_header(name: str) -> bool:
    """``Authorization`` or an ``X-Hws-*`` header: left over from an earlier signature."""
    lower = name.lower()
    return lower == "authorization" or lower.startswith(HWS_HEADER_PREFIX)


def resolve_authority(scheme: str, url_authority: str, host_header: Optional[str]) -> str:
    """The signed host, from the URL and the application's ``Host`` header when it set one."""
    signed = signed_host(scheme, url_authority)
    if host_header is not None and signed_host(scheme, host_header) != signed:
        raise SigningRequestError(
            f"the URL's authority {signed!r} and the Host header {host_header!r} disagree"
        )
    return signed


def select_headers(
    headers: Iterable[Tuple[str, str]], signed_headers: Sequence[str]
) -> List[HeaderField]:
    """The request's headers the agent signs: ``content-type`` and ``signed_headers``."""
    wanted = {"content-type"} | {name.lower() for name in signed_headers}
    selected: List[HeaderField] = []
    for name, value in headers:
        lower = name.lower()
        if lower not in wanted or lower == "host" or is_signature_header(lower):
            continue
        if not all(32 <= ord(c) < 127 or c == "\t" for c in value):
            raise SigningRequestError(f"the value of header {name!r} is not visible ASCII text")
        selected.append({"name": lower, "value": value})
    return selected


def describe(
    *,
    key_id: str,
    audience: str,
    method: str,
    authority: str,
    raw_path: str,
    headers: Iterable[Tuple[str, str]],
    body_sha256: str,
    signed_headers: Sequence[str],
) -> SignRequest:
    """The ``POST /v1/sign`` body for a request to ``authority`` with ``raw_path`` (the path and
    query exactly as they go on the wire)."""
    path, _, query = raw_path.partition("?")
    return {
        "key_id": key_id,
        "audience": audience,
        "method": method.upper(),
        "authority": authority,
        "path": path or "/",
        "query": query,
        "headers": select_headers(headers, signed_headers),
        "body_sha256": body_sha256,
        "signed_headers": [name.lower() for name in signed_headers],
    }


def strip_signature_headers(headers: MutableMapping[str, str]) -> None:
    """Removes ``Authorization`` and every ``X-Hws-*`` header (a retried or re-signed request)."""
    for name in [name for name in headers.keys() if is_signature_header(name)]:
        del headers[name]


def apply(headers: MutableMapping[str, str], response: SignResponse) -> None:
    """Adds the agent's headers in the order given (``authorization`` last)."""
    for field in response["headers"]:
        name, value = field["name"], field["value"]
        if not name or any(c in name or c in value for c in "\r\n\0"):
            raise SigningRequestError(f"the agent returned an invalid header {name!r}")
        headers[name] = value
