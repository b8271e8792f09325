"""Checks WebAuthn assertions with Yubico's python-fido2, independently of hwsign's Rust code.

Reads a JSON list on stdin; each item has base64url (no padding) fields public_key (SPKI DER),
authenticator_data, client_data_json, signature (DER) and challenge, and text fields rp_id and
origin. Checks, per item: clientDataJSON type, challenge, origin and crossOrigin; rpIdHash; the UP
flag; the ES256 signature over authenticatorData || SHA-256(clientDataJSON). Prints
{"verified": n, "counters": [...]} and exits 0, or names the first failure and exits 1.
"""

import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.serialization import load_der_public_key
from fido2.cose import ES256
from fido2.webauthn import AuthenticatorData, CollectedClientData


def b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fail(index: int, why: str) -> None:
    print(f"assertion {index}: {why}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    items = json.load(sys.stdin)
    counters = []
    for index, item in enumerate(items):
        key = ES256.from_cryptography_key(load_der_public_key(b64u(item["public_key"])))
        auth_data = AuthenticatorData(b64u(item["authenticator_data"]))
        client_data = CollectedClientData(b64u(item["client_data_json"]))
        if client_data.type != "webauthn.get":
            fail(index, f"client data type {client_data.type!r}")
        if client_data.challenge != b64u(item["challenge"]):
            fail(index, "challenge differs")
        if client_data.origin != item["origin"]:
            fail(index, f"origin {client_data.origin!r}")
        if client_data.cross_origin:
            fail(index, "crossOrigin is true")
        if auth_data.rp_id_hash != hashlib.sha256(item["rp_id"].encode()).digest():
            fail(index, "rpIdHash differs")
        if not auth_data.is_user_present():
            fail(index, "UP flag not set")
        try:
            key.verify(bytes(auth_data) + client_data.hash, b64u(item["signature"]))
        except Exception as error:  # cryptography raises InvalidSignature
            fail(index, f"signature does not verify: {error!r}")
        counters.append(auth_data.counter)
    print(json.dumps({"verified": len(items), "counters": counters}))


if __name__ == "__main__":
    main()
