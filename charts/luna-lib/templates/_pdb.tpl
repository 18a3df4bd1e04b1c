{{/* luna-lib.pdb: when .Values.podDisruptionBudget.enabled; minAvailable or maxUnavailable (default maxUnavailable 1). */}}
{{- define "luna-lib.pdb" -}}
{{- $p := .Values.podDisruptionBudget -}}
{{- if $p.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "luna-lib.fullname" . }}
  labels:
    {{- include "luna-lib.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable | default 1 }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "luna-lib.selectorLabels" . | nindent 6 }}
{{- end -}}
{{- end -}}
