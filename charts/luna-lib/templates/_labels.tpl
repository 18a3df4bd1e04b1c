{{/*
Labels. The selector set (name + instance) is immutable on a Deployment, so it never includes the version or chart;
the standard set adds those. Call with the root context; luna-lib.labels takes an optional component via
(dict "root" . "component" "migrations").
*/}}

{{- define "luna-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "luna-lib.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "luna-lib.labels" -}}
{{- $root := . -}}
{{- $component := "" -}}
{{- if and (kindIs "map" .) (hasKey . "root") -}}
{{- $root = .root -}}
{{- $component = .component | default "" -}}
{{- end -}}
helm.sh/chart: {{ include "luna-lib.chart" $root }}
{{ include "luna-lib.selectorLabels" $root }}
app.kubernetes.io/version: {{ (($root.Values.global | default dict).imageTag | default $root.Values.image.tag | default $root.Chart.AppVersion) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: luna
{{- with $component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
