"""The environment the Rust e2e test (`sdk_python_*` in tests/tests/it/sdk_python.rs) sets up: a
real hwsign-agent and a real verifier-protected, OpenAI-shaped API on 127.0.0.1."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Env:
    socket: str
    api: str
    key_id: str
    unregistered_key_id: str
    audience: str


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run these tests through "
            "`cargo test -p hwsign-e2e --test it sdk_python`, which starts the agent and the API"
        )
    return value


@pytest.fixture(scope="session")
def env() -> Env:
    return Env(
        socket=_need("HWSIGN_AGENT_SOCK"),
        api=_need("HWSIGN_TEST_API"),
        key_id=_need("HWSIGN_TEST_KEY_ID"),
        unregistered_key_id=_need("HWSIGN_TEST_UNREGISTERED_KEY_ID"),
        audience=_need("HWSIGN_TEST_AUDIENCE"),
    )
