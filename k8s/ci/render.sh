#!/usr/bin/env bash
# Renders everything Luna installs into OUTDIR, one file per chart and values variant, for kubeconform: every
# chart x (defaults, ci/*-values.yaml), luna-infra for kind, the NATS chart with Luna's values, k8s/namespaces.yaml.
# Same flags as tools/kube-check (TEMPLATE_FLAGS): the Kubernetes version and the KEDA/Prometheus-operator APIs.
#   k8s/ci/render.sh /tmp/rendered
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: render.sh OUTDIR}"
# shellcheck source=k8s/ci/charts.sh
source "$ROOT/k8s/ci/charts.sh"
FLAGS=(--kube-version 1.32.0 --api-versions keda.sh/v1alpha1 --api-versions monitoring.coreos.com/v1)
mkdir -p "$OUT"
while read -r chart; do
  is_library "$chart" && continue
  if grep -q '^dependencies:' "$chart/Chart.yaml"; then helm dependency build --skip-refresh "$chart" >/dev/null; fi
  name="$(basename "$chart")"
  while read -r values; do
    args=(template "$name" "$chart" --namespace luna "${FLAGS[@]}")
    file="$OUT/$name.yaml"
    if [[ -n "$values" ]]; then args+=(-f "$values"); file="$OUT/$name--$(basename "$values" .yaml).yaml"; fi
    helm "${args[@]}" >"$file"
  done < <(chart_variants "$chart")
done < <(luna_charts "$ROOT")
helm template luna-infra "$ROOT/k8s/charts/luna-infra" --namespace luna "${FLAGS[@]}" -f "$ROOT/k8s/values/infra-kind.yaml" >"$OUT/luna-infra--kind.yaml"
helm template luna-infra "$ROOT/k8s/charts/luna-infra" --namespace luna "${FLAGS[@]}" --set postgres.backups.enabled=true >"$OUT/luna-infra--backups.yaml"
helm template nats "$ROOT"/k8s/vendor/nats-*.tgz --namespace luna "${FLAGS[@]}" -f "$ROOT/k8s/values/nats.yaml" >"$OUT/nats.yaml"
cp "$ROOT/k8s/namespaces.yaml" "$OUT/namespaces.yaml"
printf "%s files rendered into %s\n" "$(find "$OUT" -name "*.yaml" | wc -l)" "$OUT" >&2
