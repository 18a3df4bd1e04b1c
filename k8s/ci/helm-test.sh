#!/usr/bin/env bash
# `helm test` of every release in NAMESPACE (Luna's charts ship test pods in templates/tests/; so does NATS), with
# the test pods' logs. Fails when any test fails.
#   k8s/ci/helm-test.sh [NAMESPACE]
set -euo pipefail
NS="${1:-luna}"
failed=()
for release in $(helm list -n "$NS" -q); do
  echo "==> helm test $release"
  helm test "$release" -n "$NS" --logs --timeout 5m || failed+=("$release")
done
if ((${#failed[@]})); then echo "helm test failed: ${failed[*]}" >&2; exit 1; fi
