{{/* luna-lib.serviceMonitor: Prometheus-operator scrape of the admin port's /metrics, when .Values.serviceMonitor.enabled. */}}
{{- define "luna-lib.serviceMonitor" -}}
{{- $m := .Values.serviceMonitor -}}
{{- if $m.enabled -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "luna-lib.fullname" . }}
  labels:
    {{- include "luna-lib.labels" . | nindent 4 }}
    {{- with $m.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "luna-lib.selectorLabels" . | nindent 6 }}
    # The ClusterIP Service only: the headless one selects the same pods and would double every series.
    matchExpressions:
      - key: luna.dev/headless
        operator: DoesNotExist
  endpoints:
    - port: admin
      path: /metrics
      interval: {{ $m.interval | default "30s" }}
      scrapeTimeout: {{ $m.scrapeTimeout | default "10s" }}
      {{- with $m.relabelings }}
      relabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  targetLabels:
    - app.kubernetes.io/name
{{- end -}}
{{- end -}}
