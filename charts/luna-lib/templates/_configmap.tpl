{{/* luna-lib.configmap: the service's non-secret environment (luna-lib.configEnv), read with envFrom. */}}
{{- define "luna-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "luna-lib.fullname" . }}
  labels:
    {{- include "luna-lib.labels" . | nindent 4 }}
data:
  {{- range $k, $v := (include "luna-lib.configEnv" . | fromYaml) }}
  {{ $k }}: {{ $v | toString | quote }}
  {{- end }}
{{- end -}}
