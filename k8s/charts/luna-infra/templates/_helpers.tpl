{{/* Labels every object carries: the standard set, plus the component. */}}
{{- define "luna-infra.labels" -}}
app.kubernetes.io/part-of: luna
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
