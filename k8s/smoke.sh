#!/usr/bin/env bash
# Luna through its gateway, as a user sees it (docs/DEPLOY.md#verify): the admin creates an invite, a new user signs
# up with it, gets the sign-up credits, lists the models, chats (a streamed reply), is charged for it, and generates
# an image. Uses the `luna` CLI from this checkout (tools/cli; `make deps` first), over HTTP/1.1 like a browser.
#
#   kubectl -n luna port-forward svc/gateway 8080:8080 &     # kind; on a cloud cluster use the LoadBalancer's URL
#   k8s/smoke.sh                                              # LUNA_URL defaults to http://127.0.0.1:8080
#
# Environment: LUNA_URL, LUNA_NAMESPACE (luna), LUNA_ADMIN_EMAIL (admin@luna.local), LUNA_ADMIN_PASSWORD (default:
# read from the Secret auth-secrets with kubectl), LUNA_SMOKE_IMAGE=0 to skip the image job, LUNA_SMOKE_WAIT
# (seconds to wait for the gateway to answer, 120).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LUNA_URL="${LUNA_URL:-http://127.0.0.1:8080}"
NAMESPACE="${LUNA_NAMESPACE:-luna}"
ADMIN_EMAIL="${LUNA_ADMIN_EMAIL:-admin@luna.local}"
WAIT="${LUNA_SMOKE_WAIT:-120}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

luna() { node "$ROOT/tools/cli/bin/luna.js" "$@"; }
say() { printf '==> %s\n' "$*"; }
fail() { printf 'smoke: %s\n' "$*" >&2; exit 1; }
# "1,234 credits available" → 1234
available() { luna balance | sed -n 's/^\([0-9,]*\) credits\{0,1\} available.*/\1/p' | tr -d ,; }

say "gateway at $LUNA_URL"
deadline=$((SECONDS + WAIT))
until LUNA_CONFIG_DIR="$WORK/anon" luna models >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "no answer from $LUNA_URL within ${WAIT}s (luna models)"
  sleep 3
done

ADMIN_PASSWORD="${LUNA_ADMIN_PASSWORD:-}"
if [[ -z "$ADMIN_PASSWORD" ]]; then
  ADMIN_PASSWORD="$(kubectl -n "$NAMESPACE" get secret auth-secrets -o 'jsonpath={.data.AUTH_ADMIN_PASSWORD}' | base64 -d)"
fi
[[ -n "$ADMIN_PASSWORD" ]] || fail "no admin password (set LUNA_ADMIN_PASSWORD or create auth-secrets with k8s/bootstrap.sh)"

say "admin signs in and creates an invite"
export LUNA_CONFIG_DIR="$WORK/admin"
printf '%s\n' "$ADMIN_PASSWORD" | luna login --email "$ADMIN_EMAIL" --password-stdin >/dev/null
invite="$(luna admin invites create --count 1 --expires 1h --note smoke 2>/dev/null | head -1)"
[[ -n "$invite" ]] || fail "no invite code created"

say "a new user signs up with it"
export LUNA_CONFIG_DIR="$WORK/user"
email="smoke-$(date +%s)-$RANDOM@example.test"
printf '%s\n' "smoke-$RANDOM-$RANDOM-passphrase" | luna signup --email "$email" --invite "$invite" --name Smoke --password-stdin
before="$(available)"
[[ "$before" =~ ^[0-9]+$ && "$before" -gt 0 ]] || fail "no sign-up credits (balance: '${before}')"
say "sign-up credits: $before"

say "models"
luna models

say "a streamed chat reply"
reply="$(luna ask "Say hello to the smoke test in one short sentence.")"
[[ -n "${reply//[[:space:]]/}" ]] || fail "empty reply"
printf '    %s\n' "${reply:0:200}"
after="$(available)"
[[ "$after" =~ ^[0-9]+$ && "$after" -lt "$before" ]] || fail "the reply was not charged (before $before, after ${after})"
say "charged $((before - after)) credits for the reply"

if [[ "${LUNA_SMOKE_IMAGE:-1}" == 1 ]]; then
  say "an image job"
  luna image "a lighthouse in a storm" --count 1 --out "$WORK/images"
  compgen -G "$WORK/images/*.png" >/dev/null || fail "no PNG downloaded"
fi
say "smoke test passed"
