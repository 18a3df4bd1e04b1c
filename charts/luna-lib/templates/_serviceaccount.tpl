{{/* luna-lib.serviceAccount: rendered when .Values.serviceAccount.create (the services need no Kubernetes API token). */}}
{{- define "luna-lib.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "luna-lib.serviceAccountName" . }}
  labels:
    {{- include "luna-lib.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken | default false }}
{{- end -}}
{{- end -}}
