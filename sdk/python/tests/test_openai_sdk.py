"""The real OpenAI Python SDK, unmodified, through httpx with HwsignAuth, against the
OpenAI-shaped API behind the real verifier."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from hwsign import AttestationRequired, HwsignAuth


def _client(env, key_id=None, **options) -> OpenAI:
    auth = HwsignAuth(key_id or env.key_id, env.audience)
    return OpenAI(
        base_url=env.api, api_key="unused", http_client=httpx.Client(auth=auth), **options
    )


def _messages(text: str):
    return [{"role": "user", "content": text}]


def test_openai_chat_completion_is_signed_and_accepted(env):
    completion = _client(env).chat.completions.create(model="m", messages=_messages("hello"))
    content = json.loads(completion.choices[0].message.content)
    assert content["key_id"] == env.key_id
    assert content["echo"] == "hello"


def test_openai_streaming_chat_completion(env):
    stream = _client(env).chat.completions.create(
        model="m", messages=_messages("streamed"), stream=True
    )
    deltas = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert len([d for d in deltas if d]) == 2  # the content arrived in two events
    content = json.loads("".join(deltas))
    assert content["echo"] == "streamed"
    assert content["key_id"] == env.key_id


def test_openai_sdk_retry_after_429_is_signed_anew_and_accepted(env):
    model = f"rate-limit-once-{uuid.uuid4()}"
    completion = _client(env, max_retries=2).chat.completions.create(
        model=model, messages=_messages("retry")
    )
    nonces = json.loads(completion.choices[0].message.content)["nonces"]
    # The first attempt was answered 429 by the API after the verifier accepted it; the SDK's
    # retry carried a new nonce (the verifier would refuse a replayed one) and was accepted.
    assert len(nonces) == 2
    assert nonces[0] != nonces[1]


def test_openai_without_retries_sees_the_429(env):
    client = _client(env, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model=f"rate-limit-once-{uuid.uuid4()}", messages=_messages("no retry")
        )


def test_openai_file_upload_multipart(env, tmp_path):
    data = b"hwsign upload\n" * 100_000  # 1.4 MB
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    client = _client(env)
    with path.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    assert uploaded.bytes == len(data)
    assert uploaded.filename == "train.jsonl"
    assert uploaded.purpose == "fine-tune"
    extra = uploaded.model_extra or {}
    assert extra["sha256"] == hashlib.sha256(data).hexdigest()
    assert extra["key_id"] == env.key_id
    in_memory = client.files.create(file=("small.txt", b"abc"), purpose="assistants")
    assert (in_memory.model_extra or {})["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_async_openai_chat_stream_and_retry(env):
    async def run():
        auth = HwsignAuth(env.key_id, env.audience)
        async with httpx.AsyncClient(auth=auth) as http_client:
            client = AsyncOpenAI(base_url=env.api, api_key="unused", http_client=http_client)
            plain = await client.chat.completions.create(model="m", messages=_messages("a"))
            stream = await client.chat.completions.create(
                model="m", messages=_messages("b"), stream=True
            )
            deltas = [chunk.choices[0].delta.content or "" async for chunk in stream]
            retried = await client.chat.completions.create(
                model=f"rate-limit-once-{uuid.uuid4()}", messages=_messages("c")
            )
            return plain, "".join(deltas), retried

    plain, streamed, retried = asyncio.run(run())
    assert json.loads(plain.choices[0].message.content)["echo"] == "a"
    assert json.loads(streamed)["echo"] == "b"
    nonces = json.loads(retried.choices[0].message.content)["nonces"]
    assert len(set(nonces)) == 2


def test_openai_unregistered_key_is_an_authentication_error(env):
    client = _client(env, key_id=env.unregistered_key_id)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="m", messages=_messages("x"))
    assert refused.value.response.headers["www-authenticate"] == 'HWS1 error="unknown_key"'


def test_openai_challenge_surfaces_as_the_cause(env):
    client = _client(env, max_retries=0)
    with pytest.raises(openai.APIConnectionError) as failed:
        client.post("/challenge/attestation_required", body={}, cast_to=httpx.Response)
    assert isinstance(failed.value.__cause__, AttestationRequired)
