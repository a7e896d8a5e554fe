"""Validates normwatch evidence package directories with independent implementations.

For each package: stix2-validator (errors fail, warnings are printed), stix2.parse of the
whole bundle (constraint checks), deterministic SCO ids recomputed by the stix2 library, the
TLP 2.0 marking ids, and the DSSE envelope verified with securesystemslib against the
manifest's SHA-256. Exit status 0 only if every package passes.
"""

import argparse
import base64
import copy
import hashlib
import json
import pathlib
import sys

import maxminddb
import stix2
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from stix2validator import ValidationOptions, validate_file

TLP2 = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
SCO_TYPES = {"ipv4-addr", "ipv6-addr", "autonomous-system", "network-traffic"}


def check_stix(pkg: pathlib.Path, problems: list) -> None:
    path = pkg / "stix" / "bundle.json"
    results = validate_file(str(path), ValidationOptions(version="2.1"))
    for obj in results.object_results:
        for w in obj.warnings:
            print(f"  warning {obj.object_id}: {w}")
        for e in obj.errors:
            problems.append(f"stix2-validator {obj.object_id}: {e}")
    if not results.is_valid:
        problems.append("stix2-validator: bundle is not valid")

    bundle = json.loads(path.read_text())
    try:
        parsed = stix2.parse(copy.deepcopy(bundle), allow_custom=False)
    except Exception as e:  # any parse or constraint failure is a finding
        problems.append(f"stix2.parse: {type(e).__name__}: {e}")
        return

    by_id = {o["id"]: o for o in bundle["objects"]}
    for obj in parsed.objects:
        if obj["type"] in SCO_TYPES:
            # Rebuild without the id: stix2 computes the deterministic one itself.
            props = {k: v for k, v in by_id[obj["id"]].items() if k != "id"}
            fresh = stix2.parse(props, allow_custom=False)
            if fresh["id"] != obj["id"]:
                problems.append(f"SCO id {obj['id']} but stix2 computes {fresh['id']}")
        if obj["type"] == "marking-definition":
            level = by_id[obj["id"]]["extensions"][
                "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"]["tlp_2_0"]
            if TLP2.get(level) != obj["id"]:
                problems.append(f"TLP 2.0 {level} has id {obj['id']}, OASIS says {TLP2.get(level)}")
    n_sco = sum(1 for o in bundle["objects"] if o["type"] in SCO_TYPES)
    print(f"  stix: {len(bundle['objects'])} objects ({n_sco} SCOs) parsed, ids checked")


def check_dsse(pkg: pathlib.Path, key_path: pathlib.Path, problems: list) -> None:
    keydict = json.loads(key_path.read_text())
    key = SSlibKey.from_dict(keydict["keyid"], copy.deepcopy(keydict))
    env_dict = json.loads((pkg / "manifest.intoto.dsse.json").read_text())
    # Envelope.from_dict mutates its argument.
    env = Envelope.from_dict(copy.deepcopy(env_dict))
    try:
        env.verify([key], 1)
    except Exception as e:
        problems.append(f"securesystemslib DSSE verify: {type(e).__name__}: {e}")
        return
    statement = json.loads(base64.b64decode(env_dict["payload"]))
    digest = hashlib.sha256((pkg / "manifest.json").read_bytes()).hexdigest()
    subject = [s for s in statement["subject"] if s["name"] == "manifest.json"]
    if not subject or subject[0]["digest"]["sha256"] != digest:
        problems.append("DSSE statement subject does not match manifest.json")
    manifest = json.loads((pkg / "manifest.json").read_text())
    for f in manifest["files"]:
        data = (pkg / f["path"]).read_bytes()
        if f.get("appendable"):
            # The custody log may grow after signing; the signed part is its prefix.
            data = data[: f["size"]]
        if hashlib.sha256(data).hexdigest() != f["sha256"] or len(data) != f["size"]:
            problems.append(f"{f['path']}: hash or size differs from the manifest")
    print(f"  dsse: signature verifies (securesystemslib), {len(manifest['files'])} file hashes match")


def check_attribution(pkg: pathlib.Path, geoip: pathlib.Path, problems: list) -> None:
    """The Rust maxminddb lookups against the Python reader on the same database files."""
    att = json.loads((pkg / "evidence" / "attribution.json").read_text())
    files = {d["role"]: geoip / d["file"] for d in att["databases"]}
    readers = {role: maxminddb.open_database(str(path)) for role, path in files.items()}
    for src in att["sources"]:
        a = src["attribution"]
        addr = src["addr"]
        if "country" in readers:
            rec = readers["country"].get(addr) or {}
            want = (rec.get("country", {}).get("iso_code"),
                    rec.get("registered_country", {}).get("iso_code"))
            got = (a.get("geo_country"), a.get("registered_country"))
            if want != got:
                problems.append(f"{addr}: countries {got}, Python maxminddb says {want}")
        if "asn" in readers:
            rec = readers["asn"].get(addr) or {}
            want = (rec.get("autonomous_system_number"), rec.get("autonomous_system_organization"))
            got = (a.get("asn"), a.get("as_org"))
            if want != got:
                problems.append(f"{addr}: AS {got}, Python maxminddb says {want}")
    print(f"  attribution: {len(att['sources'])} sources agree with Python maxminddb")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", type=pathlib.Path, required=True, help="signer's public key (.pub)")
    ap.add_argument("--geoip", type=pathlib.Path, help="directory of the mmdb files used")
    ap.add_argument("packages", nargs="+", type=pathlib.Path)
    args = ap.parse_args()
    failed = 0
    for pkg in args.packages:
        print(f"{pkg.name}:")
        problems: list = []
        check_stix(pkg, problems)
        check_dsse(pkg, args.key, problems)
        if args.geoip:
            check_attribution(pkg, args.geoip, problems)
        for p in problems:
            print(f"  FAIL {p}")
        failed += bool(problems)
    print(f"{len(args.packages) - failed}/{len(args.packages)} packages pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
