#!/usr/bin/env bash
# The Authority walkthrough with curl: issue -> verify -> revoke -> denied.
# Usage: examples/authority.sh URL ADMIN_KEY [WORKDIR]   (needs curl, python3 and `coupon` on PATH)
set -euo pipefail
url=${1:?base URL, e.g. http://127.0.0.1:8700}
key=${2:?admin API key (printed by coupon up, kept in var/admin.key)}
work=${3:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

say "a holder key for the caller (svc-a), and its RFC 7638 thumbprint"
jkt=$(coupon keygen --out holder.jwk --force --json | json '["thumbprint"]')
echo "jkt=$jkt"

say "issue: POST /v1/coupons"
curl -sS -X POST "$url/v1/coupons" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
  -d "{\"subject\":\"svc-a\",\"audience\":[\"orders-api\"],\"tenant\":\"acme\",
       \"resource\":\"orders/**\",\"actions\":[\"read\"],\"purpose\":\"fulfilment\",
       \"ttl\":300,\"binding\":{\"jkt\":\"$jkt\"}}" > issued.json
json '["coupon"]' < issued.json > coupon.txt
echo "jti=$(json '["jti"]' < issued.json) policy=$(json '["policy_version"]' < issued.json)"

verify() {
  coupon dpop create --key holder.jwk --htm GET --htu https://orders.example/orders/7 \
    --token coupon.txt > proof.txt
  curl -sS -X POST "$url/v1/coupons/verify" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d "{\"coupon\":\"$(cat coupon.txt)\",\"audience\":\"orders-api\",\"resource\":\"orders/7\",
         \"action\":\"read\",\"dpop\":\"$(cat proof.txt)\",\"htm\":\"GET\",
         \"htu\":\"https://orders.example/orders/7\"}"
}

say "verify: POST /v1/coupons/verify (with a fresh DPoP proof)"
verify | tee verify1.json | json '["allow"]'

say "revoke: POST /v1/revocations (the whole lineage)"
curl -sS -X POST "$url/v1/revocations" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
  -d "{\"kind\":\"lineage\",\"value\":\"$(json '["lineage"]' < issued.json)\",\"reason\":\"demo\"}" \
  | json '["cursor"]'

say "verify again: denied"
verify | tee verify2.json | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['allow'], d['code'], d['reason'])"
python3 -c "import json,sys; d=json.load(open('verify2.json')); sys.exit(0 if d['code']=='CPN-REV-001' else 1)"
printf '\nauthority walkthrough done: issued, allowed, revoked, denied (files in %s)\n' "$work"
