"""The other side of hwsign's RFC 9421 interop tests, written with an independent implementation
(pyauth's http-message-signatures), from docs/PROTOCOL.md's "RFC 9421 encoding" only.

    rfc9421_interop.py sign    < job.json   → prints the signed request's header fields as JSON
    rfc9421_interop.py verify  < job.json   → exits 0 if the signature verifies, 1 otherwise

job.json: {"method", "url", "headers": [[name, value], ...], "body": str, "key_id", "audience",
and "private_key_pem" + "created" + "nonce" (sign) or "public_key_pem" (verify)}.
"""

import datetime
import json
import sys

from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, algorithms
from http_message_signatures.resolvers import MappingKeyResolver

COVERED = ("@method", "@authority", "@path", "@query", "content-digest", "content-type")


class Request:
    def __init__(self, job):
        self.method = job["method"]
        self.url = job["url"]
        self.headers = {name: value for name, value in job["headers"]}


def sign(job):
    request = Request(job)
    resolver = MappingKeyResolver(
        public_keys={}, private_keys={job["key_id"]: job["private_key_pem"].encode()}
    )
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ECDSA_P256_SHA256, key_resolver=resolver)
    signer.sign(
        request,
        key_id=job["key_id"],
        created=datetime.datetime.fromtimestamp(job["created"], tz=datetime.timezone.utc),
        nonce=job["nonce"],
        label="hws",
        tag="hws1:" + job["audience"],
        covered_component_ids=COVERED,
        body=job["body"].encode(),
    )
    print(json.dumps(sorted([name.lower(), value] for name, value in request.headers.items())))


def verify(job):
    request = Request(job)
    resolver = MappingKeyResolver(
        public_keys={job["key_id"]: job["public_key_pem"].encode()}, private_keys={}
    )
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ECDSA_P256_SHA256, key_resolver=resolver)
    try:
        results = verifier.verify(
            request,
            expect_tag="hws1:" + job["audience"],
            require_components=COVERED,
            body=job["body"].encode(),
        )
    except Exception as error:  # any refusal is the answer, printed for the test's message
        print(f"refused: {type(error).__name__}: {error}")
        return 1
    print(f"verified: {[r.parameters.get('keyid') for r in results]}")
    return 0


def main():
    job = json.load(sys.stdin)
    if sys.argv[1] == "sign":
        sign(job)
        return 0
    return verify(job)


if __name__ == "__main__":
    sys.exit(main())
