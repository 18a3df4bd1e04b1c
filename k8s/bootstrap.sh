#!/usr/bin/env bash
# Everything a Kubernetes cluster needs before Luna's own releases, in order, idempotent (docs/DEPLOY.md#bootstrap):
# namespaces, kube-prometheus-stack (its CRDs first: other releases ship ServiceMonitors and PodMonitors), the
# CloudNativePG operator, KEDA, the Secrets Luna reads (generated here, never committed), NATS with JetStream,
# luna-infra (a CloudNativePG cluster per service, Redis, object storage), the database URLs, and on GPU clusters
# the NVIDIA device plugin. Every step waits until what it installed is ready.
#
#   k8s/bootstrap.sh --profile kind            # kind / CI: small volumes and requests, no GPUs
#   k8s/bootstrap.sh --profile gpu             # a real cluster (the default)
#   k8s/bootstrap.sh --dry-run                 # print what would run; touches nothing
#   k8s/bootstrap.sh secrets database-urls     # only some steps (names below)
#
# Re-running is safe: charts are `helm upgrade --install`ed with pinned versions, Secrets and their keys are created
# only when missing (existing keys are never replaced; rotation is a separate, deliberate act: docs/DEPLOY.md).
# Needs kubectl, helm 3 (skaffold and this script are tested with helm 3.17; helm 4.1.4 breaks skaffold), openssl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${LUNA_PROFILE:-gpu}"
NAMESPACE="${LUNA_NAMESPACE:-luna}"
TIMEOUT="${LUNA_BOOTSTRAP_TIMEOUT:-10m}"
# minio: luna-infra runs MinIO and the bootstrap creates its credentials; external: the cloud's S3 (objectStore.enabled
# false in LUNA_INFRA_VALUES), credentials left to the SRE.
OBJECT_STORE="${LUNA_OBJECT_STORE:-minio}"
DRY_RUN=0

# Pinned third-party charts (k8s/vendor/README.md holds the copies the offline checks use; bump both together).
KPS_CHART=kube-prometheus-stack KPS_REPO=https://prometheus-community.github.io/helm-charts KPS_VERSION=88.5.3
CNPG_CHART=cloudnative-pg CNPG_REPO=https://cloudnative-pg.github.io/charts CNPG_VERSION=0.29.0
KEDA_CHART=keda KEDA_REPO=https://kedacore.github.io/charts KEDA_VERSION=2.20.2
NATS_CHART=nats NATS_REPO=https://nats-io.github.io/k8s/helm/charts NATS_VERSION=2.14.2
NVDP_CHART=nvidia-device-plugin NVDP_REPO=https://nvidia.github.io/k8s-device-plugin NVDP_VERSION=0.20.0

# Luna's services: each has a Secret <service>-secrets (the charts' existingSecret) and a database pg-<service>.
SERVICES=(auth billing model-registry chat-router image-job)
ALL_STEPS=(namespaces monitoring operators secrets nats infra database-urls gpu summary)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  printf 'Options: --profile kind|gpu, --namespace NAME (default luna), --timeout DURATION (default 10m), --dry-run\n'
  printf 'Steps: %s\n' "${ALL_STEPS[*]}"
  printf 'Environment: LUNA_PROFILE, LUNA_NAMESPACE, LUNA_BOOTSTRAP_TIMEOUT,\n'
  printf '  LUNA_INFRA_VALUES (a values file for the luna-infra release: external databases, backups, sizes),\n'
  printf '  LUNA_OBJECT_STORE (minio, the default, or external: no MinIO credentials are generated)\n'
}

STEPS=()
while (($#)); do
  case "$1" in
    --profile) PROFILE="${2:?--profile needs kind or gpu}"; shift 2 ;;
    --profile=*) PROFILE="${1#*=}"; shift ;;
    --namespace) NAMESPACE="${2:?--namespace needs a name}"; shift 2 ;;
    --timeout) TIMEOUT="${2:?--timeout needs a duration}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "bootstrap: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      if [[ " ${ALL_STEPS[*]} " != *" $1 "* ]]; then echo "bootstrap: unknown step $1 (steps: ${ALL_STEPS[*]})" >&2; exit 2; fi
      STEPS+=("$1"); shift ;;
  esac
done
case "$PROFILE" in kind|gpu) ;; *) echo "bootstrap: --profile must be kind or gpu, not '$PROFILE'" >&2; exit 2 ;; esac
case "$OBJECT_STORE" in minio|external) ;; *) echo "bootstrap: LUNA_OBJECT_STORE must be minio or external, not '$OBJECT_STORE'" >&2; exit 2 ;; esac
((${#STEPS[@]})) || STEPS=("${ALL_STEPS[@]}")

STEP_NO=0
step() { STEP_NO=$((STEP_NO + 1)); printf '\n==> [%d/%d] %s\n' "$STEP_NO" "${#STEPS[@]}" "$*"; }
note() { printf '    %s\n' "$*"; }
# Commands that change the cluster: printed instead of run with --dry-run.
run() {
  if ((DRY_RUN)); then printf '    + %s\n' "$*"; else "$@"; fi
}

preflight() {
  ((DRY_RUN)) && return 0
  local tool
  for tool in kubectl helm openssl; do
    command -v "$tool" >/dev/null || { echo "bootstrap: $tool is required (docs/DEPLOY.md#prerequisites)" >&2; exit 1; }
  done
  local hv
  hv="$(helm version --template '{{.Version}}' 2>/dev/null || true)"
  [[ "$hv" == v3.* ]] || { echo "bootstrap: helm 3 is required (found '${hv:-none}'; helm 4 breaks skaffold's helm deployer)" >&2; exit 1; }
  kubectl cluster-info >/dev/null || { echo "bootstrap: no cluster reachable with the current kubectl context" >&2; exit 1; }
  note "cluster: $(kubectl config current-context), profile: $PROFILE, namespace: $NAMESPACE"
}

# helm_release NAME NAMESPACE CHART REPO VERSION VALUES... — values files relative to the repository root; the kind
# variant <file>-kind.yaml is added after each one that has it.
helm_release() {
  local name="$1" ns="$2" chart="$3" repo="$4" version="$5"; shift 5
  local args=(upgrade --install "$name" "$chart" --namespace "$ns" --create-namespace --wait --timeout "$TIMEOUT")
  [[ -n "$repo" ]] && args+=(--repo "$repo" --version "$version")
  local f path
  for f in "$@"; do
    path="$f"
    [[ "$f" == /* ]] || path="$ROOT/$f"
    args+=(-f "$path")
    if [[ "$PROFILE" == kind && -f "${path%.yaml}-kind.yaml" ]]; then args+=(-f "${path%.yaml}-kind.yaml"); fi
  done
  note "helm release $name ($chart${version:+ $version}) in $ns"
  run helm "${args[@]}"
}

# ---------- Secrets: one value per key, created when missing, never printed ----------
b64() { base64 | tr -d '\n'; }
b64url() { base64 | tr '+/' '-_' | tr -d '=\n'; }
secret_key() { # SECRET KEY → the decoded value, empty when missing
  ((DRY_RUN)) && return 0
  kubectl -n "$NAMESPACE" get secret "$1" -o "jsonpath={.data.$2}" 2>/dev/null | base64 -d 2>/dev/null || true
}
put_secret_key() { # SECRET KEY VALUE (the value travels on stdin, not in the process list)
  if ((DRY_RUN)); then printf '    + set key %s in secret %s\n' "$2" "$1"; return 0; fi
  if kubectl -n "$NAMESPACE" get secret "$1" >/dev/null 2>&1; then
    printf '{"data":{"%s":"%s"}}' "$2" "$(printf %s "$3" | b64)" | kubectl -n "$NAMESPACE" patch secret "$1" --type merge --patch-file /dev/stdin >/dev/null
  else
    printf '{"apiVersion":"v1","kind":"Secret","type":"Opaque","metadata":{"name":"%s","labels":{"app.kubernetes.io/part-of":"luna"}},"data":{"%s":"%s"}}' \
      "$1" "$2" "$(printf %s "$3" | b64)" | kubectl -n "$NAMESPACE" create -f - >/dev/null
  fi
}
ensure_secret_key() { # SECRET KEY GENERATOR — runs GENERATOR only when the key is missing
  if [[ -n "$(secret_key "$1" "$2")" ]]; then note "secret $1: $2 kept"; return 0; fi
  put_secret_key "$1" "$2" "$($3)"
  note "secret $1: $2 created"
}
gen_hex32() { openssl rand -hex 32; }
gen_password() { openssl rand -base64 24 | tr -d '/+=\n'; }
# LUNA_INTERNAL_KEY: an Ed25519 private JWK with a kid (kit loadInternalKey), from openssl alone.
gen_internal_key() {
  ((DRY_RUN)) && { echo '{"dry-run":true}'; return 0; }
  local dir d x
  dir="$(mktemp -d)"
  openssl genpkey -algorithm ed25519 -out "$dir/k.pem" 2>/dev/null
  d="$(openssl pkey -in "$dir/k.pem" -outform DER | tail -c 32 | b64url)"
  x="$(openssl pkey -in "$dir/k.pem" -pubout -outform DER | tail -c 32 | b64url)"
  rm -rf "$dir"
  printf '{"kty":"OKP","crv":"Ed25519","d":"%s","x":"%s","kid":"internal-%s","alg":"EdDSA"}' "$d" "$x" "$(date -u +%Y%m%d)"
}
# One internal key shared by every service: the one already in a service's Secret, else a new one.
internal_key() {
  local s key=""
  for s in "${SERVICES[@]}"; do key="$(secret_key "$s-secrets" LUNA_INTERNAL_KEY)"; [[ -n "$key" ]] && break; done
  [[ -n "$key" ]] || key="$(gen_internal_key)"
  printf %s "$key"
}
shared_url_secret() { local v; v="$(secret_key image-job-secrets IMAGE_URL_SECRET)"; [[ -n "$v" ]] && printf %s "$v" || gen_hex32; }
s3_user() { secret_key luna-object-store MINIO_ROOT_USER; }
s3_password() { secret_key luna-object-store MINIO_ROOT_PASSWORD; }
minio_user() { echo luna-admin; }

# ---------- steps ----------
do_namespaces() {
  step "namespaces (k8s/namespaces.yaml)"
  run kubectl apply -f "$ROOT/k8s/namespaces.yaml"
  if [[ "$NAMESPACE" != luna ]]; then
    note "extra namespace $NAMESPACE"
    if ((DRY_RUN)); then run kubectl create namespace "$NAMESPACE"
    else kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -; fi
  fi
}

do_monitoring() {
  step "kube-prometheus-stack (Prometheus operator CRDs, Prometheus, Grafana, Alertmanager) in monitoring"
  helm_release kube-prometheus-stack monitoring "$KPS_CHART" "$KPS_REPO" "$KPS_VERSION" k8s/values/kube-prometheus-stack.yaml
}

do_operators() {
  step "operators: CloudNativePG in cnpg-system, KEDA in keda"
  helm_release cnpg cnpg-system "$CNPG_CHART" "$CNPG_REPO" "$CNPG_VERSION" k8s/values/cnpg.yaml
  helm_release keda keda "$KEDA_CHART" "$KEDA_REPO" "$KEDA_VERSION" k8s/values/keda.yaml
}

do_secrets() {
  step "Secrets in $NAMESPACE (created when missing; values never printed)"
  local s
  for s in "${SERVICES[@]}"; do ensure_secret_key "$s-secrets" LUNA_INTERNAL_KEY internal_key; done
  ensure_secret_key auth-secrets AUTH_KEY_ENCRYPTION_KEY gen_hex32
  ensure_secret_key auth-secrets AUTH_ADMIN_PASSWORD gen_password
  ensure_secret_key image-job-secrets IMAGE_URL_SECRET gen_hex32
  if [[ "$OBJECT_STORE" == minio ]]; then
    ensure_secret_key luna-object-store MINIO_ROOT_USER minio_user
    ensure_secret_key luna-object-store MINIO_ROOT_PASSWORD gen_password
    ensure_secret_key image-job-secrets IMAGE_S3_ACCESS_KEY_ID s3_user
    ensure_secret_key image-job-secrets IMAGE_S3_SECRET_ACCESS_KEY s3_password
  else
    note "object storage is external (LUNA_OBJECT_STORE=$OBJECT_STORE): S3 credentials are yours to put in image-job-secrets, or none for workload identity"
  fi
  # The image worker (charts/comfyui sidecar) reads image-job-secrets too (its chart's default existingSecret).
  note "first admin: AUTH_ADMIN_EMAIL of k8s/values/luna/auth.yaml; password: kubectl -n $NAMESPACE get secret auth-secrets -o jsonpath='{.data.AUTH_ADMIN_PASSWORD}' | base64 -d"
}

do_nats() {
  step "NATS with JetStream (3 servers, file storage, sync_interval: always) in $NAMESPACE"
  helm_release nats "$NAMESPACE" "$NATS_CHART" "$NATS_REPO" "$NATS_VERSION" k8s/values/nats.yaml
  run kubectl -n "$NAMESPACE" rollout status statefulset/nats --timeout "$TIMEOUT"
}

do_infra() {
  step "luna-infra: a CloudNativePG cluster per service, Redis, object storage in $NAMESPACE"
  local values=()
  [[ "$PROFILE" == kind ]] && values=(k8s/values/infra-kind.yaml)
  # Your own settings (external databases, backups, sizes): LUNA_INFRA_VALUES=/path/to/values.yaml.
  if [[ -n "${LUNA_INFRA_VALUES:-}" ]]; then values+=("$(cd "$(dirname "$LUNA_INFRA_VALUES")" && pwd)/$(basename "$LUNA_INFRA_VALUES")"); fi
  helm_release luna-infra "$NAMESPACE" "$ROOT/k8s/charts/luna-infra" "" "" "${values[@]}"
  local s
  for s in "${SERVICES[@]}"; do
    if ((!DRY_RUN)) && ! kubectl -n "$NAMESPACE" get "clusters.postgresql.cnpg.io/pg-$s" >/dev/null 2>&1; then
      note "no cluster pg-$s (postgres.enabled=false: an external database)"; continue
    fi
    note "waiting for cluster pg-$s"
    run kubectl -n "$NAMESPACE" wait --for=condition=Ready "clusters.postgresql.cnpg.io/pg-$s" --timeout "$TIMEOUT"
  done
}

do_database_urls() {
  step "DATABASE_URL of each service, from CloudNativePG's pg-<service>-app Secret"
  local s uri
  for s in "${SERVICES[@]}"; do
    if ((DRY_RUN)); then put_secret_key "$s-secrets" DATABASE_URL "(uri of pg-$s-app)"; continue; fi
    uri="$(kubectl -n "$NAMESPACE" get secret "pg-$s-app" -o 'jsonpath={.data.uri}' 2>/dev/null | base64 -d)"
    if [[ -z "$uri" ]]; then
      # No CloudNativePG cluster: an external database, whose URL the SRE put in the Secret (docs/DEPLOY.md).
      if [[ -n "$(secret_key "$s-secrets" DATABASE_URL)" ]]; then note "$s-secrets: DATABASE_URL kept (external database)"; continue; fi
      echo "bootstrap: no DATABASE_URL for $s: neither secret pg-$s-app (CloudNativePG) nor key DATABASE_URL in $s-secrets" >&2; exit 1
    fi
    # Replaced on every run: CloudNativePG owns the role's password, this copy follows it.
    [[ "$(secret_key "$s-secrets" DATABASE_URL)" == "$uri" ]] || put_secret_key "$s-secrets" DATABASE_URL "$uri"
    note "$s-secrets: DATABASE_URL → pg-$s-rw"
  done
}

do_gpu() {
  if [[ "$PROFILE" != gpu ]]; then step "GPU device plugin: skipped (profile $PROFILE runs simulators)"; return 0; fi
  step "NVIDIA device plugin (advertises nvidia.com/gpu on nodes labelled nvidia.com/gpu.present=true)"
  helm_release nvidia-device-plugin nvidia-device-plugin "$NVDP_CHART" "$NVDP_REPO" "$NVDP_VERSION" k8s/values/nvidia-device-plugin.yaml
}

do_summary() {
  step "ready"
  note "infrastructure is installed in $NAMESPACE; next: skaffold run -p $PROFILE (docs/DEPLOY.md#install)"
  ((DRY_RUN)) || run kubectl -n "$NAMESPACE" get pods -o wide
}

preflight
for s in "${STEPS[@]}"; do
  case "$s" in
    namespaces) do_namespaces ;;
    monitoring) do_monitoring ;;
    operators) do_operators ;;
    secrets) do_secrets ;;
    nats) do_nats ;;
    infra) do_infra ;;
    database-urls) do_database_urls ;;
    gpu) do_gpu ;;
    summary) do_summary ;;
  esac
done
