#!/usr/bin/env bash
# The end-to-end suite (tools/e2e, topology `remote`) against Luna in a cluster, through its Envoy gateway — the
# same scenario `make test` runs locally: invites from the admin API, sign-ups, streamed chat replies billed to the
# credit, a reply stopped mid-way (the vLLM simulator told to stall), an image job and its download, isolation
# between users, admin RPCs. Needs the simulators (skaffold -p kind, or the charts' simulator values) and `make deps`.
#
#   k8s/ci/e2e.sh [NAMESPACE]          # default luna; the current kube context
#
# It port-forwards, on free local ports, the gateway, the vLLM simulator serving the seeded catalog's text models
# (k8s/values/luna/model-registry-kind.yaml points the catalog at it) and the object store (presigned image URLs
# name it by its in-cluster address, which LUNA_E2E_ORIGIN_MAP maps to the port-forward), and stops them on exit.
# Environment: LUNA_ADMIN_EMAIL (admin@luna.local), LUNA_ADMIN_PASSWORD (default: read from the Secret auth-secrets),
# LUNA_E2E_GATEWAY_SERVICE (gateway), LUNA_E2E_VLLM_SERVICE (vllm-llama-3-1-8b), LUNA_E2E_OBJECT_STORE_SERVICE
# (minio; empty: no object store forwarded), LUNA_E2E_SIGNUP_CREDITS (1000: billing's BILLING_SIGNUP_CREDITS).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NS="${1:-luna}"
WORK="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

# forward NAME RESOURCE PORT: `kubectl port-forward` RESOURCE's PORT to a free local port, set as PORT_<NAME>.
forward() {
  local log="$WORK/$1.log" port=""
  kubectl -n "$NS" port-forward "$2" ":$3" --address 127.0.0.1 >"$log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 60); do
    port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) -> .*/\1/p' "$log" | head -1)"
    [[ -n "$port" ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.5
  done
  [[ -n "$port" ]] || fail "kubectl -n $NS port-forward $2 :$3 did not start: $(cat "$log")"
  printf -v "PORT_$1" '%s' "$port"
  printf '==> %s: 127.0.0.1:%s -> %s:%s\n' "$1" "$port" "$2" "$3"
}

ADMIN_PASSWORD="${LUNA_ADMIN_PASSWORD:-}"
if [[ -z "$ADMIN_PASSWORD" ]]; then
  ADMIN_PASSWORD="$(kubectl -n "$NS" get secret auth-secrets -o 'jsonpath={.data.AUTH_ADMIN_PASSWORD}' | base64 -d)"
fi
[[ -n "$ADMIN_PASSWORD" ]] || fail "no admin password (set LUNA_ADMIN_PASSWORD or create auth-secrets with k8s/bootstrap.sh)"

forward gateway "svc/${LUNA_E2E_GATEWAY_SERVICE:-gateway}" 8080
forward vllm "svc/${LUNA_E2E_VLLM_SERVICE:-vllm-llama-3-1-8b}" 8000
ORIGIN_MAP=""
STORE="${LUNA_E2E_OBJECT_STORE_SERVICE-minio}"
if [[ -n "$STORE" ]]; then
  forward store "svc/$STORE" 9000
  ORIGIN_MAP="http://$STORE:9000=http://127.0.0.1:$PORT_store"
fi

cd "$ROOT"
LUNA_E2E_REMOTE_URL="http://127.0.0.1:$PORT_gateway" \
LUNA_E2E_ADMIN_EMAIL="${LUNA_ADMIN_EMAIL:-admin@luna.local}" \
LUNA_E2E_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
LUNA_E2E_VLLM_URL="http://127.0.0.1:$PORT_vllm" \
LUNA_E2E_ORIGIN_MAP="$ORIGIN_MAP" \
LUNA_E2E_SIGNUP_CREDITS="${LUNA_E2E_SIGNUP_CREDITS:-}" \
  node_modules/.bin/vitest run tools/e2e
