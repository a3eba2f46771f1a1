#!/usr/bin/env bash
# The coupon walkthrough: mint a coupon, attenuate it offline to a delegate, prove
# possession with DPoP, and watch `coupon verify` allow the right request and deny a wider one.
# Usage: examples/walkthrough.sh [WORKDIR]   (needs the `coupon` command on PATH)
set -euo pipefail
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

run coupon keygen --kid issuer-1 --out issuer.jwk --jwks-out jwks.json --force
run coupon keygen --out holder.jwk --force
run coupon keygen --alg ES256 --out delegate.jwk --force

say "coupon mint ... > coupon.txt"
coupon mint --key issuer.jwk --issuer https://authority.example \
  --subject svc-a --audience orders-api --tenant acme \
  --resource 'orders/**' --action read --action write --purpose fulfilment \
  --bind-key holder.jwk --ttl 600 > coupon.txt
run coupon inspect coupon.txt

say "coupon attenuate coupon.txt ... > chain.txt   # offline, signed by the holder key"
coupon attenuate coupon.txt --key holder.jwk --to-key delegate.jwk \
  --subject svc-b --resource orders/123 --action read --purpose fulfilment.ship \
  --ttl 120 > chain.txt
run coupon validate chain.txt

say "coupon dpop create --key delegate.jwk ... > proof.txt"
coupon dpop create --key delegate.jwk --htm GET \
  --htu https://api.example/orders/123 --token chain.txt > proof.txt

run coupon verify chain.txt --jwks jwks.json --aud orders-api \
  --resource orders/123 --action read --purpose fulfilment.ship \
  --dpop proof.txt --htm GET --htu https://api.example/orders/123

say "coupon verify ... --action write   # wider than the delegation: denied"
if coupon verify chain.txt --jwks jwks.json --aud orders-api \
  --resource orders/123 --action write \
  --dpop proof.txt --htm GET --htu https://api.example/orders/123; then
  echo "UNEXPECTED: a wider request was allowed" >&2
  exit 1
fi
printf '\nwalkthrough done: the narrow request was allowed, the wider one denied (files in %s)\n' "$work"
