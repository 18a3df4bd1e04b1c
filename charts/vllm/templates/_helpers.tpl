{{/*
vllm.models: every entry of .Values.models with .Values.defaults merged under it (luna-lib.deepMerge), as YAML
{models: [...]}; each entry also gets `objectName` (vllm-<name>, ≤ 63), `minReplicas` (0 with scaleToZero) and
`tp` (tensor-parallel size). Checks what the schema cannot (uniqueness, cross-field rules) and fails with a message.
*/}}
{{- define "vllm.models" -}}
{{- $root := . -}}
{{- $out := list -}}
{{- $names := dict -}}
{{- $served := dict -}}
{{- range $i, $raw := .Values.models -}}
{{- $m := include "luna-lib.deepMerge" (list $root.Values.defaults $raw) | fromYaml -}}
{{- if hasKey $names $m.name }}{{ fail (printf "models[%d]: name %q is used twice" $i $m.name) }}{{ end -}}
{{- if hasKey $served $m.servedModelName }}{{ fail (printf "models[%d]: servedModelName %q is used twice" $i $m.servedModelName) }}{{ end -}}
{{- $_ := set $names $m.name true -}}
{{- $_ := set $served $m.servedModelName true -}}
{{- $_ := set $m "objectName" (include "luna-lib.suffixed" (list $root $m.name)) -}}
{{- $a := $m.autoscaling -}}
{{- $z := $a.scaleToZero -}}
{{- if $z.enabled -}}
{{- if not $a.enabled }}{{ fail (printf "models[%d] (%s): scaleToZero needs autoscaling.enabled (KEDA wakes the pool)" $i $m.name) }}{{ end -}}
{{- if le (int $a.cooldownPeriod) (int $z.coldStartSeconds) -}}
{{- fail (printf "models[%d] (%s): autoscaling.cooldownPeriod (%v s) must exceed scaleToZero.coldStartSeconds (%v s), or the pool goes back to zero before a woken replica has served anyone" $i $m.name $a.cooldownPeriod $z.coldStartSeconds) -}}
{{- end -}}
{{- if le (int $a.scaleDownStabilizationSeconds) (int $z.coldStartSeconds) -}}
{{- fail (printf "models[%d] (%s): autoscaling.scaleDownStabilizationSeconds (%v s) must exceed scaleToZero.coldStartSeconds (%v s)" $i $m.name $a.scaleDownStabilizationSeconds $z.coldStartSeconds) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $m "minReplicas" (ternary 0 (int $a.minReplicaCount) (and $a.enabled $z.enabled | default false)) -}}
{{- if and $a.enabled (lt (int $a.maxReplicaCount) (max 1 (int $m.minReplicas) | int)) -}}
{{- fail (printf "models[%d] (%s): autoscaling.maxReplicaCount (%v) must be at least 1 and at least minReplicaCount" $i $m.name $a.maxReplicaCount) -}}
{{- end -}}
{{- $_ := set $m "tp" (int ($m.tensorParallelSize | default $m.gpu.count)) -}}
{{- $out = append $out $m -}}
{{- end -}}
{{- toYaml (dict "models" $out) -}}
{{- end -}}

{{/* vllm.selectorLabels (list $ $model): the chart's selector set plus the model. */}}
{{- define "vllm.selectorLabels" -}}
{{ include "luna-lib.selectorLabels" (index . 0) }}
luna.dev/model: {{ (index . 1).name }}
{{- end -}}

{{/* vllm.matcher (list $ $model "label" "value"): PromQL label matchers for a model, namespace-scoped when asked. */}}
{{- define "vllm.matcher" -}}
{{- $root := index . 0 -}}{{- $m := index . 1 -}}
{{- $parts := list (printf "%s=%q" (index . 2) (index . 3)) -}}
{{- if $m.autoscaling.scopeToNamespace }}{{ $parts = append $parts (printf "namespace=%q" $root.Release.Namespace) }}{{ end -}}
{{- join "," $parts -}}
{{- end -}}
