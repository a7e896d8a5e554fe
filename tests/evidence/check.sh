#!/usr/bin/env bash
# Independent validation of normwatch evidence packages with the reference Python tools:
# stix2-validator --strict and stix2.parse on every STIX bundle, the Incident Core Extension's
# properties against its OASIS schema, every MISP tag against the MISP taxonomies (pytaxonomies)
# and the local cyber-norms taxonomy, every package pushed to a medallion TAXII server on
# loopback and read back whole, deterministic SCO ids recomputed by the
# stix2 library, the DSSE signature verified by securesystemslib, the attribution compared with
# the Python maxminddb reader. The same virtualenv provides medallion, the TAXII 2.1 server the
# Rust delivery test (crates/evidence/tests/evidence/delivery.rs) starts on loopback.
#
# Usage: tests/evidence/check.sh
#            builds the sample packages (cargo example write_sample) and the packages of
#            `normwatch demo` (a simulated attack capture through every stage) and checks them
#        tests/evidence/check.sh --key PUB [--geoip DIR] PACKAGE_DIR...
#            checks package directories already written
# Env:   NORMWATCH_PYENV  virtualenv location (default: <target dir>/pyenv)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${NORMWATCH_PYENV:-$target/pyenv}"
requirements="$root/tests/evidence/requirements.txt"
stamp="$venv/.normwatch-requirements"

# Create or refresh the virtualenv only when the pinned requirements changed.
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi

# A medallion TAXII 2.1 server on loopback: every package is pushed to it and its collection
# read back unfiltered (every pushed object must return whole).
taxii_dir="$(mktemp -d)"
medallion_pid=""
cleanup() {
    if [[ -n "$medallion_pid" ]]; then
        kill "$medallion_pid" 2>/dev/null || true
        wait "$medallion_pid" 2>/dev/null || true
    fi
    rm -rf "$taxii_dir"
}
trap cleanup EXIT
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
collection="365fed99-08fa-fdcd-a1b3-fb247eb41d01"
"$venv/bin/python" - "$taxii_dir" "$port" "$collection" <<'PY'
import json, sys, pathlib
d, port, coll = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
root = f"http://127.0.0.1:{port}/api1/"
data = {"/discovery": {"title": "check", "default": root, "api_roots": [root]},
        "api1": {"information": {"title": "check", "versions": ["application/taxii+json;version=2.1"],
                                 "max_content_length": 104857600},
                 "status": [],
                 "collections": [{"id": coll, "title": "evidence", "can_read": True, "can_write": True,
                                  "media_types": ["application/stix+json;version=2.1"],
                                  "objects": [], "manifest": []}]}}
(d / "data.json").write_text(json.dumps(data))
(d / "config.json").write_text(json.dumps({
    "backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                "filename": str(d / "data.json")},
    "users": {"check": "check-only"}, "taxii": {"max_page_size": 100}}))
PY
"$venv/bin/medallion" --host 127.0.0.1 --port "$port" "$taxii_dir/config.json" >"$taxii_dir/log" 2>&1 &
medallion_pid=$!
for _ in $(seq 50); do
    "$venv/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.2
done
taxii=(--taxii "http://127.0.0.1:$port/api1/" --collection "$collection"
       --taxii-auth "Basic $(printf 'check:check-only' | base64)")

if [[ $# -gt 0 ]]; then
    "$venv/bin/python" "$root/tests/evidence/check_package.py" "${taxii[@]}" "$@"
else
    out="$target/evidence-check"
    rm -rf "$out"
    (cd "$root" && cargo run --quiet -p normwatch-evidence --example write_sample -- \
        "$out" "$root/../shared/data/geoip" "$root/config/norms.toml")
    dirs=()
    for d in "$out"/EP-*; do
        [[ -d "$d" ]] && dirs+=("$d")
    done
    "$venv/bin/python" "$root/tests/evidence/check_package.py" "${taxii[@]}" \
        --key "$out/signer.pub" --geoip "$root/../shared/data/geoip" "${dirs[@]}"

    # Packages the whole pipeline builds from simulated attack captures (SYN flood, DNS
    # amplification, Modbus write, S7 STOP; and the campaign: one request per State for three
    # operators' alerts, its follow-ups): capture, flows, detector, evidence stage.
    for scenario in all campaign; do
        demo="$target/evidence-demo-$scenario"
        rm -rf "$demo"
        (cd "$root" && cargo run --quiet -p normwatch-cli -- demo -s "$scenario" -o "$demo" \
            --metrics-listen off >/dev/null)
        dirs=()
        for d in "$demo"/evidence/packages/EP-*; do
            [[ -d "$d" ]] && dirs+=("$d")
        done
        [[ ${#dirs[@]} -gt 0 ]] || { echo "normwatch demo -s $scenario wrote no evidence package" >&2; exit 1; }
        "$venv/bin/python" "$root/tests/evidence/check_package.py" "${taxii[@]}" \
            --key "$demo/signing.key.pub" --geoip "$demo/geoip" "${dirs[@]}"
    done
fi
