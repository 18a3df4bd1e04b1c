#!/usr/bin/env bash
# helm lint --strict of every chart with its defaults and each ci/*-values.yaml, after building its file://
# dependencies — with the helm on PATH (CI pins v3.17.2, the version tools/kube-check runs in `make test`).
#   k8s/ci/helm-lint.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=k8s/ci/charts.sh
source "$ROOT/k8s/ci/charts.sh"
failed=0
while read -r chart; do
  if grep -q '^dependencies:' "$chart/Chart.yaml"; then helm dependency build --skip-refresh "$chart" >/dev/null; fi
  while read -r values; do
    args=(lint --strict "$chart")
    [[ -n "$values" ]] && args+=(-f "$values")
    printf '==> helm %s\n' "${args[*]#"$ROOT/"}"
    helm "${args[@]}" || failed=1
  done < <(chart_variants "$chart")
done < <(luna_charts "$ROOT")
exit "$failed"
