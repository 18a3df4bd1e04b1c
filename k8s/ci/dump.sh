#!/usr/bin/env bash
# After a failed install or test: what an on-call person would look at, written to OUTDIR (uploaded by the
# workflow) and summarised on stdout — nodes, every pod, events in time order, descriptions and logs (current and
# previous container) of every pod in Luna's namespace and of unready pods elsewhere, Helm releases. No Secret values.
#   k8s/ci/dump.sh [NAMESPACE] [OUTDIR]
set -uo pipefail
NS="${1:-luna}"
OUT="${2:-diagnostics}"
mkdir -p "$OUT/logs"
kubectl get nodes -o wide >"$OUT/nodes.txt" 2>&1
kubectl get pods -A -o wide >"$OUT/pods.txt" 2>&1
kubectl get events -A --sort-by=.lastTimestamp >"$OUT/events.txt" 2>&1
kubectl -n "$NS" get all,pvc,configmaps,scaledobjects,clusters.postgresql.cnpg.io -o wide >"$OUT/objects.txt" 2>&1
kubectl -n "$NS" describe pods >"$OUT/describe-pods.txt" 2>&1
helm list -A >"$OUT/helm-releases.txt" 2>&1
for r in $(helm list -n "$NS" -q 2>/dev/null); do helm status "$r" -n "$NS" >"$OUT/helm-status-$r.txt" 2>&1; done
dump_logs() { # NAMESPACE POD
  kubectl -n "$1" logs "$2" --all-containers --prefix --timestamps >"$OUT/logs/$1--$2.log" 2>&1
  kubectl -n "$1" logs "$2" --all-containers --prefix --timestamps --previous >"$OUT/logs/$1--$2.previous.log" 2>/dev/null || rm -f "$OUT/logs/$1--$2.previous.log"
}
for pod in $(kubectl -n "$NS" get pods -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do dump_logs "$NS" "$pod"; done
# Unready pods in the other namespaces (operators, monitoring).
kubectl get pods -A --no-headers 2>/dev/null | awk -v ns="$NS" '$1 != ns { split($3, r, "/"); if (r[1] != r[2] && $4 != "Completed") print $1, $2 }' |
  while read -r ns pod; do dump_logs "$ns" "$pod"; done

echo "==== pods not ready"
kubectl get pods -A --no-headers 2>/dev/null | awk '{ split($3, r, "/"); if (r[1] != r[2] && $4 != "Completed") print }'
echo "==== last 60 events"
tail -n 60 "$OUT/events.txt"
echo "==== last 40 log lines of each unready pod in $NS"
kubectl -n "$NS" get pods --no-headers 2>/dev/null | awk '{ split($2, r, "/"); if (r[1] != r[2] && $3 != "Completed") print $1 }' |
  while read -r pod; do echo "---- $pod"; tail -n 40 "$OUT/logs/$NS--$pod.log"; done
echo "(everything is in $OUT/)"
exit 0
