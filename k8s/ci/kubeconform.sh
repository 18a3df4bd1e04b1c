#!/usr/bin/env bash
# kubeconform -strict (unknown fields are errors) over everything render.sh produces: Kubernetes objects against
# the 1.32 schemas, custom resources (KEDA, Prometheus operator, CloudNativePG) against the CRD schemas of the
# datreeio CRDs-catalog. Needs kubeconform and helm on PATH and the network (the schemas are downloaded).
#   k8s/ci/kubeconform.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$ROOT/k8s/ci/render.sh" "$OUT"
kubeconform -strict -summary -output text \
  -kubernetes-version 1.32.0 \
  -schema-location default \
  -schema-location 'https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json' \
  "$OUT"
