{{/*
comfyui.pools: every entry of .Values.pools with .Values.defaults merged under it (luna-lib.deepMerge), as YAML
{pools: [...]}; each also gets objectName (comfyui-<name>), durable (image-job's consumer, see poolDurable() in
services/image-job/src/domain/job.ts) and minReplicas. Fails on what the schema cannot check.
*/}}
{{- define "comfyui.pools" -}}
{{- $root := . -}}
{{- $out := list -}}
{{- $seen := dict -}}
{{- $seenPool := dict -}}
{{- range $i, $raw := .Values.pools -}}
{{- $p := include "luna-lib.deepMerge" (list $root.Values.defaults $raw) | fromYaml -}}
{{- if hasKey $seen $p.name }}{{ fail (printf "pools[%d]: name %q is used twice" $i $p.name) }}{{ end -}}
{{- if hasKey $seenPool $p.pool }}{{ fail (printf "pools[%d]: pool %q is used twice (two Deployments would share one consumer)" $i $p.pool) }}{{ end -}}
{{- $_ := set $seen $p.name true -}}
{{- $_ := set $seenPool $p.pool true -}}
{{- $_ := set $p "objectName" (include "luna-lib.suffixed" (list $root $p.name)) -}}
{{- $_ := set $p "durable" (printf "image-worker-%s" (replace "." "-" $p.pool)) -}}
{{- $a := $p.autoscaling -}}
{{- $z := $a.scaleToZero -}}
{{- if $z.enabled -}}
{{- if not $a.enabled }}{{ fail (printf "pools[%d] (%s): scaleToZero needs autoscaling.enabled (KEDA wakes the pool)" $i $p.name) }}{{ end -}}
{{- if le (int $a.cooldownPeriod) (int $z.coldStartSeconds) -}}
{{- fail (printf "pools[%d] (%s): autoscaling.cooldownPeriod (%v s) must exceed scaleToZero.coldStartSeconds (%v s)" $i $p.name $a.cooldownPeriod $z.coldStartSeconds) -}}
{{- end -}}
{{- if le (int $a.scaleDownStabilizationSeconds) (int $z.coldStartSeconds) -}}
{{- fail (printf "pools[%d] (%s): autoscaling.scaleDownStabilizationSeconds (%v s) must exceed scaleToZero.coldStartSeconds (%v s)" $i $p.name $a.scaleDownStabilizationSeconds $z.coldStartSeconds) -}}
{{- end -}}
{{- end -}}
{{- if lt (int $p.terminationGracePeriodSeconds) (add (int $p.drainSeconds) 45 | int) -}}
{{- fail (printf "pools[%d] (%s): terminationGracePeriodSeconds (%v) must cover drainSeconds (%v) + 45 s of the worker's shutdown steps" $i $p.name $p.terminationGracePeriodSeconds $p.drainSeconds) -}}
{{- end -}}
{{- $_ := set $p "minReplicas" (ternary 0 (int $a.minReplicaCount) (and $a.enabled $z.enabled | default false)) -}}
{{- if and $a.enabled (lt (int $a.maxReplicaCount) (max 1 (int $p.minReplicas) | int)) -}}
{{- fail (printf "pools[%d] (%s): autoscaling.maxReplicaCount (%v) must be at least 1 and at least minReplicaCount" $i $p.name $a.maxReplicaCount) -}}
{{- end -}}
{{- $out = append $out $p -}}
{{- end -}}
{{- toYaml (dict "pools" $out) -}}
{{- end -}}

{{/* comfyui.selectorLabels (list $ $pool): the chart's selector set plus the pool. */}}
{{- define "comfyui.selectorLabels" -}}
{{ include "luna-lib.selectorLabels" (index . 0) }}
luna.dev/pool: {{ (index . 1).name }}
{{- end -}}
