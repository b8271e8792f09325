"""Driver of the e2e test `admin_sdks_start_a_new_session_after_session_revoked`
(tests/tests/it/admin_resession.rs): a client of one Python SDK adapter that sends
`GET <url>` each time a line `get` arrives on stdin and prints the answer as one JSON line
(`{"status": …, "body": …}` or `{"error": …}`), so the test can end sessions and revoke the device
between two calls. Runs in the SDK's pinned virtualenv (scripts/sdk-env python).

    sdk_resession.py httpx|httpx-async|requests URL KEY_ID AUDIENCE   (agent socket from the env)
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Tuple

import httpx
import requests

from hwsign import HwsignAuth, HwsignRequestsAuth


def answer(status: int, text: str) -> str:
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    return json.dumps({"status": status, "body": body})


def main() -> int:
    adapter, url, key_id, audience = sys.argv[1:5]
    if adapter == "httpx":
        client = httpx.Client(auth=HwsignAuth(key_id=key_id, audience=audience))

        def get() -> Tuple[int, str]:
            response = client.get(url)
            return response.status_code, response.text

    elif adapter == "requests":
        session = requests.Session()
        session.auth = HwsignRequestsAuth(key_id=key_id, audience=audience)

        def get() -> Tuple[int, str]:
            response = session.get(url)
            return response.status_code, response.text

    elif adapter == "httpx-async":
        loop = asyncio.new_event_loop()
        aclient = httpx.AsyncClient(auth=HwsignAuth(key_id=key_id, audience=audience))

        async def aget() -> Tuple[int, str]:
            response = await aclient.get(url)
            return response.status_code, response.text

        def get() -> Tuple[int, str]:
            return loop.run_until_complete(aget())

    else:
        print(json.dumps({"error": f"unknown adapter {adapter}"}), flush=True)
        return 2
    for line in sys.stdin:
        if line.strip() != "get":
            continue
        try:
            status, text = get()
            print(answer(status, text), flush=True)
        except Exception as error:  # reported to the test, which fails with it
            print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
