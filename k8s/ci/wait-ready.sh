#!/usr/bin/env bash
# Waits until Luna is ready in NAMESPACE: every Deployment available, every StatefulSet rolled out, every
# CloudNativePG cluster ready, and every pod (except finished Jobs) Ready. Prints what it waits for.
#   k8s/ci/wait-ready.sh [NAMESPACE] [TIMEOUT]
set -euo pipefail
NS="${1:-luna}"
TIMEOUT="${2:-10m}"
echo "==> Deployments in $NS"
kubectl -n "$NS" wait --for=condition=Available deployment --all --timeout "$TIMEOUT"
echo "==> StatefulSets in $NS"
for sts in $(kubectl -n "$NS" get statefulset -o name); do kubectl -n "$NS" rollout status "$sts" --timeout "$TIMEOUT"; done
echo "==> CloudNativePG clusters in $NS"
if kubectl get crd clusters.postgresql.cnpg.io >/dev/null 2>&1; then
  kubectl -n "$NS" wait --for=condition=Ready clusters.postgresql.cnpg.io --all --timeout "$TIMEOUT"
fi
echo "==> pods in $NS"
kubectl -n "$NS" wait --for=condition=Ready pod --field-selector=status.phase!=Succeeded --all --timeout "$TIMEOUT"
kubectl -n "$NS" get pods -o wide
