#!/usr/bin/env python3
"""Check an hwsign audit chain (a decision log's chain files, an export, or an agent log)
independently of hwsign: the auditor's re-implementation described in docs/AUDIT.md.

usage: audit-check.py [--key PUBLIC.pem] [--checkpoints FILE] [--export] [--unchained-prefix]
                      FILE...

Prints "ok: N records ..." and exits 0, or "broken at seq S: KIND: DETAIL" and exits 1.
Needs python3 and, to check checkpoint signatures (--key), the `cryptography` package.
"""

import argparse
import hashlib
import json
import sys

ZERO = "0" * 64


def canonical(record):
    """RFC 8785 for hwsign's records: sorted ASCII keys, no whitespace, integers only."""

    def check(value):
        if isinstance(value, float):
            raise ValueError("a float has no canonical form here")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
            raise ValueError("an integer beyond 2^53 - 1")
        if isinstance(value, dict):
            for item in value.values():
                check(item)
        if isinstance(value, list):
            for item in value:
                check(item)

    check(record)
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record):
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


class Broken(Exception):
    def __init__(self, seq, kind, detail):
        super().__init__(f"broken at seq {seq}: {kind}: {detail}")
        self.seq, self.kind = seq, kind


def load_key(path):
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, hashlib.sha256(der).hexdigest()


def checkpoint_ok(record, key):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    public, key_id = key
    if record.get("key") != key_id:
        return False
    signed = canonical({k: v for k, v in record.items() if k not in ("hash", "sig")})
    try:
        public.verify(bytes.fromhex(record.get("sig", "")), signed, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def lines(paths):
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\n")
                if line:
                    yield line


def parse(line):
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if not all(k in record for k in ("seq", "prev", "hash")):
        return None
    return record


def check(paths, key=None, kept=None, export=False, unchained_prefix=False):
    kept = kept or {}
    last = None  # (seq, hash)
    stats = {"records": 0, "checkpoints": 0, "omitted": 0, "unchained": 0}
    stream = lines(paths)
    for line in stream:
        record = parse(line)
        if record is None:
            if unchained_prefix and last is None:
                stats["unchained"] += 1
                continue
            raise Broken(0 if last is None else last[0] + 1, "malformed", "not a sealed record")
        seq = record["seq"]
        omitted = record.get("omitted") is True
        if omitted and not export:
            raise Broken(seq, "edited", "an export stand-in in a log")
        computed = record["hash"] if omitted else record_hash(record)
        if computed != record["hash"]:
            raise Broken(seq, "edited", "the record's content does not match its hash")
        if last is not None:
            lseq, lhash = last
            if seq == lseq + 1 and record["prev"] != lhash:
                # An inserted record links to the real predecessor; the real one follows it.
                following = next(stream, None)
                nxt = parse(following) if following else None
                if nxt and nxt["seq"] == seq and nxt["prev"] == lhash:
                    raise Broken(seq, "inserted", f"a record with seq {seq} that is not the chain's")
                raise Broken(lseq, "edited", f"record {seq} does not link to this record's hash")
            if seq <= lseq:
                raise Broken(seq, "inserted", f"a record with seq {seq} after seq {lseq}")
            if seq > lseq + 1:
                missing = range(lseq + 1, seq)
                for rest in stream:
                    later = parse(rest)
                    if later and later["seq"] in missing:
                        raise Broken(lseq + 1, "reordered", f"record {later['seq']} appears later")
                raise Broken(lseq + 1, "removed", f"records {lseq + 1}..{seq - 1} are missing")
        if record.get("kind") == "checkpoint" and not omitted:
            if key is not None:
                if not checkpoint_ok(record, key):
                    raise Broken(seq, "forged_checkpoint", "the signature does not verify")
                stats["checkpoints"] += 1
        if seq in kept and kept[seq] != computed:
            raise Broken(seq, "edited", "differs from the checkpoint kept apart")
        stats["records"] += 1
        stats["omitted"] += int(omitted)
        last = (seq, computed)
    end = 0 if last is None else last[0] + 1
    beyond = [seq for seq in kept if seq >= end]
    if beyond:
        raise Broken(end, "truncated", f"a signed checkpoint at seq {min(beyond)} is past the end")
    return stats, last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key")
    parser.add_argument("--checkpoints")
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--unchained-prefix", action="store_true")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    key = load_key(args.key) if args.key else None
    kept = {}
    try:
        if args.checkpoints:
            if key is None:
                raise Broken(0, "forged_checkpoint", "checkpoints kept apart need --key")
            for line in lines([args.checkpoints]):
                record = parse(line)
                if record is None or record_hash(record) != record["hash"] or not checkpoint_ok(record, key):
                    raise Broken(record["seq"] if record else 0, "forged_checkpoint", "kept-apart checkpoint")
                kept[record["seq"]] = record["hash"]
        stats, last = check(args.files, key, kept, args.export, args.unchained_prefix)
    except Broken as broken:
        print(broken)
        return 1
    head = last[1] if last else "-"
    print(
        f"ok: {stats['records']} records, {stats['omitted']} stand-ins, "
        f"{stats['checkpoints']} checkpoints verified, head {head}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
