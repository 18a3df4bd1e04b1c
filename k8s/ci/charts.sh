#!/usr/bin/env bash
# The charts the Helm checks run over, one per line: every directory under charts/ and k8s/charts/ with a Chart.yaml.
# Sourced by helm-lint.sh and render.sh.
set -euo pipefail
luna_charts() {
  local root="$1" d
  for d in "$root"/charts/*/ "$root"/k8s/charts/*/; do
    [[ -f "$d/Chart.yaml" ]] && printf '%s\n' "${d%/}"
  done
}
# The values variants of a chart: "" (its defaults) and each ci/*-values.yaml (ci/invalid* are expected to fail).
chart_variants() {
  local chart="$1" f
  printf '\n'
  for f in "$chart"/ci/*-values.yaml; do [[ -f "$f" ]] && printf '%s\n' "$f"; done
}
is_library() { grep -q '^type: *library' "$1/Chart.yaml"; }
