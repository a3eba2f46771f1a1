#!/usr/bin/env bash
# The auditor's walkthrough: pin the log's key, trust a checkpoint, revoke a coupon, and prove
# the revocation is in the log, computing every proof from the log's tiles.
# Usage: examples/ledger.sh URL API_KEY [WORKDIR]   (needs `coupon` on PATH; API_KEY: admin or
# auditor for search, admin or issuer for the revocation)
set -euo pipefail
export COUPON_URL=${1:?base URL, e.g. http://127.0.0.1:8700}
export COUPON_API_KEY=${2:?API key (printed by coupon up, kept in var/admin.key)}
work=${3:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }

say "the log's verifier key: pin it (check it out of band, as you would a fingerprint)"
coupon ledger key > ledger.vkey
cat ledger.vkey

say "the newest checkpoint: a C2SP signed note (origin, size, root, signatures)"
coupon ledger checkpoint

say "verify it: signature, root from the tiles; trust it from now on (trust.json)"
coupon ledger verify --key ledger.vkey --state trust.json

jti="laptop-$(date +%s)-$RANDOM"
say "revoke a coupon: the Authority commits it with its signed audit event"
coupon revoke jti "$jti" --reason "lost laptop"

say "find the revocation in the log (auditor search), keep the entry as stored"
for _ in $(seq 50); do   # the relay and the next checkpoint take a fraction of a second
  coupon ledger search --action revocation.create --target "value=$jti" --entries-dir hits >/dev/null
  [ -n "$(ls hits 2>/dev/null)" ] && break
  sleep 0.1
done
coupon ledger search --action revocation.create --target "value=$jti"

say "prove it: the entry is in the log, and the log is consistent with what we trusted"
coupon ledger verify --key ledger.vkey --state trust.json --entry hits/*.json
printf '\nledger walkthrough done: revocation %s is provably in the log (files in %s)\n' "$jti" "$work"
