{{/* luna-lib.notes: NOTES.txt body for a Luna service chart. */}}
{{- define "luna-lib.notes" -}}
{{ include "luna-lib.fullname" . }} {{ .Chart.AppVersion }} is installed in namespace {{ .Release.Namespace }}.

  API (gRPC, gRPC-Web, Connect over h2c): {{ include "luna-lib.fullname" . }}:{{ .Values.ports.api | default "-" }} (per pod: {{ include "luna-lib.suffixed" (list . "headless") }})
  Admin (/metrics /healthz /readyz):       {{ include "luna-lib.fullname" . }}:{{ .Values.ports.admin }}
{{- if .Values.existingSecret }}

Secrets come from Secret "{{ .Values.existingSecret }}" (keys: {{ range $i, $s := .Values.secretEnv }}{{ if $i }}, {{ end }}{{ $s.key | default $s.name }}{{ end }}); it must exist before install.
{{- end }}
{{- if .Values.migrations.enabled }}
Migrations ran as the pre-install/pre-upgrade hook Job {{ include "luna-lib.suffixed" (list . "migrate") }}.
{{- end }}

Check it:
  kubectl -n {{ .Release.Namespace }} rollout status deployment/{{ include "luna-lib.fullname" . }}
  helm -n {{ .Release.Namespace }} test {{ .Release.Name }}
{{- end -}}
