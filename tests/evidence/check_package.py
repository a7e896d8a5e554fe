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
from pytaxonomies import Taxonomies
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
    # --strict: every "should" of the specification and the validator's best practices; the
    # warnings that remain are listed (README, "STIX validation") with the reason.
    # Check 301 (network-traffic should carry both ports) is the one disabled: each
    # network-traffic object sums every flow of one source to the victim, whose source ports
    # differ, so one src_port would be false; the flows themselves are in evidence/flows.jsonl.
    results = validate_file(
        str(path), ValidationOptions(version="2.1", strict=True, disabled=["301"]))
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


INCIDENT_CORE = "extension-definition--ef765651-680c-498d-9894-99799f2fa126"
# The properties the OASIS Incident Core Extension schema allows (additionalProperties: false)
# and the shape of the ones normwatch writes.
INCIDENT_CORE_PROPERTIES = {
    "extension_type", "scores", "determination", "investigation_status", "incident_types",
    "detection_methods", "criticality", "recoverability", "availability_impacts",
    "external_impacts", "confidentiality_impacts", "integrity_impacts", "monetary_impacts",
    "physical_impacts", "impacted_entity_counts", "traceability_impacts",
}
DETERMINATIONS = {"blocked", "failed-attempt", "false-positive", "low-value",
                  "successful-attempt", "suspected"}


def check_incident_core(pkg: pathlib.Path, problems: list) -> None:
    bundle = json.loads((pkg / "stix" / "bundle.json").read_text())
    for o in bundle["objects"]:
        if o["type"] != "incident":
            continue
        ext = o.get("extensions", {}).get(INCIDENT_CORE)
        if ext is None:
            problems.append(f"{o['id']}: no Incident Core Extension")
            continue
        for k in ext:
            if k not in INCIDENT_CORE_PROPERTIES:
                problems.append(f"incident core: property {k} not in the OASIS schema")
        if ext.get("extension_type") != "property-extension" or \
                ext.get("determination") not in DETERMINATIONS or \
                not isinstance(ext.get("investigation_status"), str):
            problems.append("incident core: required extension_type/determination/investigation_status wrong")
        c = ext.get("criticality")
        if c is not None and not (isinstance(c, int) and 0 <= c <= 100):
            problems.append(f"incident core: criticality {c!r} is not an integer 0..100")
        for imp in ext.get("external_impacts", []):
            if not isinstance(imp, dict) or not isinstance(imp.get("impact_type"), str):
                problems.append(f"incident core: external impact {imp!r} is not an object with impact_type")
        for imp in ext.get("availability_impacts", []):
            a = imp.get("availability_impact") if isinstance(imp, dict) else None
            if not (isinstance(a, int) and 0 <= a <= 100):
                problems.append(f"incident core: availability impact {imp!r} lacks an integer 0..100")
    print("  incident core: properties and shapes as the OASIS schema allows")
    # Our own extension against the schema its extension-definition names.
    import jsonschema
    schema = json.loads((pathlib.Path(__file__).resolve().parents[2] / "config" / "stix" /
                         "norm-request-extension-v1.schema.json").read_text())
    ext_def = [o for o in bundle["objects"] if o["type"] == "extension-definition"
               and o["id"] == "extension-definition--3c8f6a2e-9d41-4b7a-8e25-71f0c6d4b9a1"]
    if not ext_def or ext_def[0]["schema"] != schema["$id"]:
        problems.append("normwatch extension-definition does not name the schema's $id")
    n = 0
    for o in bundle["objects"]:
        ours = o.get("extensions", {}).get("extension-definition--3c8f6a2e-9d41-4b7a-8e25-71f0c6d4b9a1")
        if ours is None:
            continue
        n += 1
        for e in jsonschema.Draft202012Validator(schema).iter_errors(ours):
            problems.append(f"{o['id']}: normwatch extension: {e.message}")
    print(f"  normwatch extension: {n} objects valid against its JSON schema")


TAXONOMIES = None
LOCAL_TAXONOMY = pathlib.Path(__file__).resolve().parents[2] / "config" / "misp-taxonomies" / "cyber-norms" / "machinetag.json"


def check_misp_tags(pkg: pathlib.Path, problems: list) -> None:
    """Every tag is a value of a MISP taxonomy (pytaxonomies' bundled copy) or of the local
    cyber-norms taxonomy; retired values (PAP:WHITE, tlp:white) are refused."""
    global TAXONOMIES
    if TAXONOMIES is None:
        t = Taxonomies()
        known = set()
        for ns in ("rsit", "PAP", "tlp"):
            known.update(t.get(ns).machinetags())
        known -= {"PAP:WHITE", "tlp:white"}
        local = json.loads(LOCAL_TAXONOMY.read_text())
        for v in local["values"]:
            for e in v["entry"]:
                known.add(f'{local["namespace"]}:{v["predicate"]}="{e["value"]}"')
        TAXONOMIES = known
    event = json.loads((pkg / "misp" / "event.json").read_text())["Event"]
    tags = [t["name"] for t in event.get("Tag", [])]
    for a in event.get("Attribute", []):
        tags += [t["name"] for t in a.get("Tag", [])]
    for tag in tags:
        if tag not in TAXONOMIES:
            problems.append(f"MISP tag {tag} is in no MISP taxonomy nor the local cyber-norms one")
    print(f"  misp: {len(tags)} tags, each a taxonomy value")


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


def check_taxii(pkg: pathlib.Path, api_root: str, collection: str, auth: str,
                problems: list) -> None:
    """Pushes the bundle's objects to a TAXII 2.1 server (as the Rust delivery does: all but
    the extension definition) and reads the collection back unfiltered: every pushed object
    must come back whole."""
    import urllib.request
    media = "application/taxii+json;version=2.1"
    headers = {"Accept": media, "Content-Type": media, "Authorization": auth}
    objects = [o for o in json.loads((pkg / "stix" / "bundle.json").read_text())["objects"]
               if o["type"] != "extension-definition"]
    url = f"{api_root}collections/{collection}/objects/"
    req = urllib.request.Request(url, data=json.dumps({"objects": objects}).encode(),
                                 headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        status = json.load(r)
    if status.get("failure_count", 0) and status.get("success_count", 0) + \
            status.get("failure_count", 0) != len(objects):
        problems.append(f"taxii push: {status}")
    held = []
    nxt = None
    while True:
        # medallion 3.0.0 fails a `next` request without `limit` (HTTP 500): always send it.
        u = url + "?limit=100" + (f"&next={nxt}" if nxt else "")
        try:
            with urllib.request.urlopen(urllib.request.Request(u, headers=headers),
                                        timeout=30) as r:
                page = json.load(r)
        except Exception as e:
            problems.append(f"taxii read-back GET {u}: {e}")
            return
        held += page.get("objects", [])
        if page.get("more") and page.get("next"):
            nxt = page["next"]
        else:
            break
    missing = [o["id"] for o in objects if o not in held]
    for m in missing:
        back = [h for h in held if h["id"] == m]
        mine = [o for o in objects if o["id"] == m][0]
        diff = sorted(k for k in set(mine) | set(back[0] if back else {})
                      if not back or mine.get(k) != back[0].get(k))
        problems.append(f"taxii read-back: {m} not returned whole "
                        f"({len(back)} held; differing: {', '.join(diff)})")
    print(f"  taxii: {len(objects)} objects pushed, every one read back whole "
          f"({len(held)} in the collection)" if not missing else "  taxii: read-back incomplete")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", type=pathlib.Path, required=True, help="signer's public key (.pub)")
    ap.add_argument("--geoip", type=pathlib.Path, help="directory of the mmdb files used")
    ap.add_argument("--taxii", help="TAXII 2.1 API root to push to and read back from")
    ap.add_argument("--collection", help="TAXII collection id")
    ap.add_argument("--taxii-auth", default="", help="Authorization header value")
    ap.add_argument("packages", nargs="+", type=pathlib.Path)
    args = ap.parse_args()
    failed = 0
    for pkg in args.packages:
        print(f"{pkg.name}:")
        problems: list = []
        check_stix(pkg, problems)
        check_incident_core(pkg, problems)
        check_misp_tags(pkg, problems)
        check_dsse(pkg, args.key, problems)
        if args.geoip:
            check_attribution(pkg, args.geoip, problems)
        if args.taxii:
            check_taxii(pkg, args.taxii, args.collection, args.taxii_auth, problems)
        for p in problems:
            print(f"  FAIL {p}")
        failed += bool(problems)
    print(f"{len(args.packages) - failed}/{len(args.packages)} packages pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
