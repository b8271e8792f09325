"""HwsignAuth (httpx, sync and async) and HwsignRequestsAuth against the real verifier."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest
import requests

from hwsign import AttestationRequired, BodyTooLargeError, HwsignAuth, HwsignRequestsAuth
from hwsign import StepUpRequired


def _chat(text: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def _content(response) -> dict:
    return json.loads(response.json()["choices"][0]["message"]["content"])


def test_httpx_sync_request_is_accepted(env):
    with httpx.Client(auth=HwsignAuth(env.key_id, env.audience)) as client:
        response = client.post(f"{env.api}/chat/completions", json=_chat("sync"))
    assert response.status_code == 200, response.text
    assert _content(response)["key_id"] == env.key_id
    assert _content(response)["echo"] == "sync"
    # The Authorization the verifier read was the signature.
    assert response.request.headers["authorization"].startswith("HWS1-ECDSA-P256-SHA256 ")


def test_httpx_async_request_is_accepted(env):
    async def call():
        async with httpx.AsyncClient(auth=HwsignAuth(env.key_id, env.audience)) as client:
            return await client.post(f"{env.api}/chat/completions", json=_chat("async"))

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    assert _content(response)["echo"] == "async"


def _generator_body(text: str):
    encoded = json.dumps(_chat(text)).encode()
    for start in range(0, len(encoded), 7):
        yield encoded[start : start + 7]


def test_httpx_one_shot_stream_is_spooled_hashed_and_accepted(env):
    with httpx.Client(auth=HwsignAuth(env.key_id, env.audience)) as client:
        response = client.post(
            f"{env.api}/chat/completions",
            content=_generator_body("generator"),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert _content(response)["echo"] == "generator"


def test_httpx_async_stream_is_spooled_hashed_and_accepted(env):
    async def body():
        for chunk in _generator_body("async generator"):
            yield chunk

    async def call():
        async with httpx.AsyncClient(auth=HwsignAuth(env.key_id, env.audience)) as client:
            return await client.post(
                f"{env.api}/chat/completions",
                content=body(),
                headers={"content-type": "application/json"},
            )

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    assert _content(response)["echo"] == "async generator"


def test_httpx_spool_is_bounded(env):
    sent = []
    auth = HwsignAuth(env.key_id, env.audience, max_spool_bytes=64)
    with httpx.Client(auth=auth, event_hooks={"request": [sent.append]}) as client:
        with pytest.raises(BodyTooLargeError) as refused:
            client.post(f"{env.api}/chat/completions", content=_generator_body("x" * 100))
    assert refused.value.limit == 64
    assert sent == []


def test_httpx_multipart_file_is_hashed_without_spooling(env, tmp_path):
    path = tmp_path / "upload.bin"
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    path.write_bytes(data)
    with httpx.Client(auth=HwsignAuth(env.key_id, env.audience)) as client, path.open("rb") as f:
        response = client.post(
            f"{env.api}/files", files={"file": ("upload.bin", f)}, data={"purpose": "test"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert response.json()["bytes"] == len(data)


def test_httpx_unregistered_key_is_refused_by_the_verifier(env):
    with httpx.Client(auth=HwsignAuth(env.unregistered_key_id, env.audience)) as client:
        response = client.post(f"{env.api}/chat/completions", json=_chat("who"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'HWS1 error="unknown_key"'
    assert response.json()["error"]["code"] == "unknown_key"


def test_httpx_challenge_is_raised_typed(env):
    with httpx.Client(auth=HwsignAuth(env.key_id, env.audience)) as client:
        with pytest.raises(AttestationRequired) as challenged:
            client.post(f"{env.api}/challenge/attestation_required", json={})
    assert challenged.value.code == "attestation_required"
    assert challenged.value.nonce == "bm9uY2UtZm9yLXRlc3Q"
    assert json.loads(challenged.value.body)["error"]["code"] == "attestation_required"


def test_httpx_challenge_hook_resends_signed_anew(env):
    seen = []
    nonces = []

    def hook(challenge):
        seen.append(challenge.code)
        return True

    auth = HwsignAuth(env.key_id, env.audience, on_challenge=hook)
    record = lambda request: nonces.append(request.headers["x-hws-nonce"])  # noqa: E731
    with httpx.Client(auth=auth, event_hooks={"request": [record]}) as client:
        # The stand-in challenges every request: the hook runs once, the resend is challenged
        # again and raised.
        with pytest.raises(StepUpRequired):
            client.post(f"{env.api}/challenge/step_up_required", json={"a": 1})
    assert seen == ["step_up_required"]
    assert len(nonces) == 2 and nonces[0] != nonces[1]


def test_httpx_async_challenge_hook_may_be_a_coroutine(env):
    seen = []

    async def hook(challenge):
        seen.append(challenge.code)
        return False

    async def call():
        auth = HwsignAuth(env.key_id, env.audience, on_challenge=hook)
        async with httpx.AsyncClient(auth=auth) as client:
            await client.post(f"{env.api}/challenge/attestation_required", json={})

    with pytest.raises(AttestationRequired):
        asyncio.run(call())
    assert seen == ["attestation_required"]


def test_requests_auth_is_accepted_with_bytes_and_generator_bodies(env):
    auth = HwsignRequestsAuth(env.key_id, env.audience)
    response = requests.post(f"{env.api}/chat/completions", json=_chat("requests"), auth=auth)
    assert response.status_code == 200, response.text
    assert _content(response)["echo"] == "requests"
    response = requests.post(
        f"{env.api}/chat/completions",
        data=_generator_body("requests generator"),
        headers={"content-type": "application/json"},
        auth=auth,
    )
    assert response.status_code == 200, response.text
    assert _content(response)["echo"] == "requests generator"


def test_requests_auth_signs_each_prepared_request_anew(env):
    auth = HwsignRequestsAuth(env.key_id, env.audience)
    with requests.Session() as session:
        session.auth = auth
        first = session.post(f"{env.api}/chat/completions", json=_chat("one"))
        second = session.post(f"{env.api}/chat/completions", json=_chat("one"))
    assert first.status_code == second.status_code == 200
    assert first.request.headers["x-hws-nonce"] != second.request.headers["x-hws-nonce"]


def test_requests_challenge_is_raised_typed(env):
    auth = HwsignRequestsAuth(env.key_id, env.audience)
    with pytest.raises(StepUpRequired) as challenged:
        requests.post(f"{env.api}/challenge/step_up_required", json={}, auth=auth)
    assert challenged.value.status == 401
