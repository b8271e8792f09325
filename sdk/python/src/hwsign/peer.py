"""Who listens on the agent's socket, read before a byte is sent.

The kernel's ``SO_PEERCRED`` answer on a connected Unix socket is the credentials of the process
that called ``listen()``. It must be the caller's own uid, root (a system agent, or systemd holding
the socket for socket activation) or an agent uid the caller configured; anyone else may have put
their own socket in the agent's place to collect the requests that are sent for signing. This is
the rule of docs/PROTOCOL.md §10, as the Rust client applies it.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Optional

from .errors import AgentUnavailableError, UntrustedAgentError

_UCRED = struct.Struct("3i")  # pid, uid, gid


def listener_uid(sock: socket.socket) -> int:
    """The uid of the process listening on the other end of the connected Unix socket ``sock``."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise AgentUnavailableError("this platform cannot read a Unix socket's peer (SO_PEERCRED)")
    raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return int(uid)


def trusted_uids(agent_uid: Optional[int], own_uid: Optional[int] = None) -> tuple[int, ...]:
    """The uids accepted as the agent: the caller's own, root, and ``agent_uid`` if given."""
    own = os.geteuid() if own_uid is None else own_uid
    uids = [own, 0]
    if agent_uid is not None and agent_uid not in uids:
        uids.append(agent_uid)
    return tuple(dict.fromkeys(uids))


def check_listener(sock: socket.socket, path: str, trusted: tuple[int, ...]) -> None:
    """Raises :class:`UntrustedAgentError` unless the listener's uid is in ``trusted``."""
    uid = listener_uid(sock)
    if uid not in trusted:
        raise UntrustedAgentError(path, uid, trusted)
