#!/usr/bin/env python3
"""Signing roots of two Gnosis Chain requests, computed apart from Palisade (hashlib only),
for tests/http_api/vectors.rs. Checked first against the recorded vectors: run with
`--check` to recompute every RANDAO_REVEAL and ATTESTATION root of
tests/data/signing-vectors/sample.jsonl the same way."""
import json
import sys
from hashlib import sha256
from pathlib import Path


def h(a, b):
    return sha256(a + b).digest()


def u64(n):
    return n.to_bytes(8, "little") + b"\0" * 24


def merkle(leaves):
    n = 1
    while n < len(leaves):
        n *= 2
    leaves = leaves + [b"\0" * 32] * (n - len(leaves))
    while len(leaves) > 1:
        leaves = [h(leaves[i], leaves[i + 1]) for i in range(0, len(leaves), 2)]
    return leaves[0]


def signing_root(obj_root, domain_type, version, gvr):
    fork_data_root = h(version + b"\0" * 28, gvr)
    return h(obj_root, bytes.fromhex(domain_type) + fork_data_root[:28])


def attestation_root(slot, index, bbr, source_epoch, source_root, target_epoch, target_root):
    return merkle([u64(slot), u64(index), bbr, h(u64(source_epoch), source_root), h(u64(target_epoch), target_root)])


def check():
    vectors = Path(__file__).parent.parent / "signing-vectors" / "sample.jsonl"
    for line in vectors.read_text().splitlines():
        v = json.loads(line)
        r = v["request"]
        if r["type"] not in ("RANDAO_REVEAL", "ATTESTATION"):
            continue
        fi = r["fork_info"]
        gvr = bytes.fromhex(fi["genesis_validators_root"][2:])
        if r["type"] == "RANDAO_REVEAL":
            epoch, obj, dom = int(r["randao_reveal"]["epoch"]), None, "02000000"
            obj = u64(epoch)
        elif r["type"] == "ATTESTATION":
            a = r["attestation"]
            epoch, dom = int(a["target"]["epoch"]), "01000000"
            b = lambda x: bytes.fromhex(x[2:])
            obj = attestation_root(int(a["slot"]), int(a["index"]), b(a["beacon_block_root"]),
                                   int(a["source"]["epoch"]), b(a["source"]["root"]), epoch, b(a["target"]["root"]))
        else:
            continue
        version = fi["fork"]["current_version"] if epoch >= int(fi["fork"]["epoch"]) else fi["fork"]["previous_version"]
        got = "0x" + signing_root(obj, dom, bytes.fromhex(version[2:]), gvr).hex()
        assert got == v["signing_root"], v["name"]
        print("ok", v["name"])


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    gvr = bytes.fromhex("f5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47")
    fulu = bytes.fromhex("06000064")
    epoch = 1714700  # Fulu on Gnosis began at epoch 1714688; 16 slots an epoch
    print("RANDAO_REVEAL epoch", epoch, "0x" + signing_root(u64(epoch), "02000000", fulu, gvr).hex())
    slot = epoch * 16 + 3
    att = attestation_root(slot, 0, bytes([0x11]) * 32, epoch - 1, bytes([0x22]) * 32, epoch, bytes([0x33]) * 32)
    print("ATTESTATION slot", slot, "0x" + signing_root(att, "01000000", fulu, gvr).hex())
