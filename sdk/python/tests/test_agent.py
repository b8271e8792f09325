"""The agent client against the real agent: calls, error codes, the listener-uid check."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile

import pytest

import hwsign
from hwsign import AgentClient, AgentError, AsyncAgentClient, UntrustedAgentError
from hwsign.challenge import challenge_of, parse_challenge, session_revoked
from hwsign.describe import describe, signed_host

UNKNOWN_KEY = "hk1_" + "0" * 32


def test_agent_status_and_keys(env):
    agent = AgentClient()
    assert agent.socket_path == env.socket
    assert agent.status()["version"]
    ids = {key["id"] for key in agent.list_keys()}
    assert {env.key_id, env.unregistered_key_id} <= ids


def test_async_agent_lists_the_same_keys(env):
    async def keys():
        return await AsyncAgentClient(env.socket).list_keys()

    assert {key["id"] for key in asyncio.run(keys())} == {
        key["id"] for key in AgentClient(env.socket).list_keys()
    }


def _sign_request(key_id: str, audience: str) -> hwsign.SignRequest:
    return describe(
        key_id=key_id,
        audience=audience,
        method="GET",
        authority="api.example.com",
        raw_path="/v1/x",
        headers=[],
        body_sha256=hwsign.body.EMPTY_SHA256,
        signed_headers=[],
    )


def test_agent_refusal_carries_the_agent_code(env):
    with pytest.raises(AgentError) as refused:
        AgentClient().sign(_sign_request(UNKNOWN_KEY, env.audience))
    assert refused.value.code == "unknown_key"
    assert refused.value.status == 404

    async def sign():
        await AsyncAgentClient().sign(_sign_request(env.key_id, "Not An Audience"))

    with pytest.raises(AgentError) as refused:
        asyncio.run(sign())
    assert refused.value.code == "invalid_request"
    assert refused.value.status == 400


def test_agent_signs_and_answers_headers_authorization_last(env):
    answer = AgentClient().sign(_sign_request(env.key_id, env.audience))
    names = [field["name"] for field in answer["headers"]]
    assert names[-1] == "authorization"
    assert {"x-hws-date", "x-hws-nonce", "x-hws-content-sha256"} <= set(names)
    assert answer["key_id"] == env.key_id


def test_missing_agent_is_unavailable(tmp_path):
    with pytest.raises(hwsign.AgentUnavailableError) as failed:
        AgentClient(str(tmp_path / "no-agent.sock")).status()
    assert isinstance(failed.value.__cause__, OSError)


def _listen_as(uid: int, path: str, received_w: int, ready_w: int) -> None:
    """Child process: bind as root, become `uid`, listen (SO_PEERCRED records the uid at listen
    time), and report how many bytes a client sent before closing."""
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.setgid(uid)
        os.setuid(uid)
        server.listen(1)
        os.write(ready_w, b"1")
        server.settimeout(10)
        conn, _ = server.accept()
        conn.settimeout(2)
        total = 0
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                total += len(data)
        except OSError:
            pass
        os.write(received_w, str(total).encode())
    finally:
        os._exit(0)


def test_untrusted_listener_is_refused_before_anything_is_sent(monkeypatch):
    directory = tempfile.mkdtemp(prefix="hwsign-untrusted-")
    path = os.path.join(directory, "agent.sock")
    if os.geteuid() == 0:
        # A real listener of another uid (nobody).
        stranger = 65534
        received_r, received_w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _listen_as(stranger, path, received_w, ready_w)
        os.close(received_w)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"1"
        with pytest.raises(UntrustedAgentError) as refused:
            AgentClient(path).status()
        assert refused.value.uid == stranger
        assert os.read(received_r, 32) == b"0"
        os.waitpid(pid, 0)
    else:
        # Not root: the listener is this process, and the client is told its own uid is another.
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        real = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real + 1)
        with pytest.raises(UntrustedAgentError) as refused:
            AgentClient(path).status()
        assert refused.value.uid == real
        conn, _ = server.accept()
        conn.settimeout(1)
        assert conn.recv(4096) == b""
    # The refusal names the uids the client would have trusted.
    assert refused.value.uid not in refused.value.trusted


def test_signed_host_rule():
    assert signed_host("https", "API.Example.com:443") == "api.example.com"
    assert signed_host("http", "127.0.0.1:80") == "127.0.0.1"
    assert signed_host("http", "127.0.0.1:8080") == "127.0.0.1:8080"
    assert signed_host("https", "[::1]:443") == "[::1]"
    with pytest.raises(hwsign.SigningRequestError):
        signed_host("https", "user@api.example.com")


def test_only_signed_headers_are_described_to_the_agent():
    request = describe(
        key_id="hk1_x",
        audience="a",
        method="post",
        authority="h",
        raw_path="/p?q=1",
        headers=[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer secret-api-key"),
            ("Cookie", "session=secret"),
            ("X-Hws-Nonce", "old"),
            ("X-Request-Id", "42"),
        ],
        body_sha256="0" * 64,
        signed_headers=["X-Request-Id"],
    )
    assert request["method"] == "POST"
    assert (request["path"], request["query"]) == ("/p", "q=1")
    assert request["headers"] == [
        {"name": "content-type", "value": "application/json"},
        {"name": "x-request-id", "value": "42"},
    ]


def test_challenges_are_typed():
    challenge = challenge_of(401, 'HWS1 error="attestation_required", nonce="abc"')
    assert isinstance(challenge, hwsign.AttestationRequired)
    assert challenge.nonce == "abc"
    assert isinstance(challenge_of(401, 'HWS1 error="step_up_required"'), hwsign.StepUpRequired)
    assert challenge_of(401, 'HWS1 error="signature_invalid"') is None
    assert challenge_of(403, 'HWS1 error="attestation_required"') is None
    assert parse_challenge('Bearer realm="x"') is None
    assert parse_challenge('HWS1 error="a\\"b"') == {"error": 'a"b'}


def test_session_revoked_is_recognized_only_as_a_401_hws1_challenge():
    assert session_revoked(401, 'HWS1 error="session_revoked"')
    assert session_revoked(401, 'HWS1 nonce="n", error="session_revoked"')
    assert not session_revoked(403, 'HWS1 error="session_revoked"')
    assert not session_revoked(401, 'HWS1 error="device_revoked"')
    assert not session_revoked(401, 'Bearer error="session_revoked"')
    assert not session_revoked(401, None)
    # Not a challenge the application's hook sees: the SDK renews the session itself.
    assert challenge_of(401, 'HWS1 error="session_revoked"') is None


def test_agent_ends_only_a_current_session(env):
    # The test agent signs strictly (no delegated session for this key): nothing to end, and
    # a session key id the agent never issued is not "ended" either.
    agent = AgentClient(env.socket)
    assert agent.end_session(env.key_id, env.audience, env.unregistered_key_id) is False
    assert asyncio.run(
        AsyncAgentClient(env.socket).end_session(env.key_id, env.audience, env.key_id)
    ) is False
    with pytest.raises(AgentError) as refused:
        agent.end_session("not a key id", env.audience, env.key_id)
    assert refused.value.code == "invalid_request"
