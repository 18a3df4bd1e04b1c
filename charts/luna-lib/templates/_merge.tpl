{{/*
luna-lib.deepMerge (list $base $override): $override merged into a copy of $base, maps recursively, everything else
(lists, scalars — also false, 0 and "") replaced. Sprig's merge/mergeOverwrite skip zero values, so a per-item
`enabled: false` or `minReplicaCount: 0` would silently keep the default. Returns YAML: `| fromYaml`.
Used by the GPU pool charts (vllm: defaults + each model; comfyui: defaults + each pool).
*/}}
{{- define "luna-lib.deepMerge" -}}
{{- $out := deepCopy (index . 0 | default dict) -}}
{{- range $k, $v := (index . 1 | default dict) -}}
{{- $cur := index $out $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $cur) -}}
{{- $_ := set $out $k (include "luna-lib.deepMerge" (list $cur $v) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
