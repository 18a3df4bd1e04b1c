{{/*
gateway.metricsPort: metrics.port, after checking the Envoy configuration has a listener on it (Envoy's admin port
is bound to 127.0.0.1, so Prometheus can only scrape a listener the configuration exposes for /stats/prometheus).
*/}}
{{- define "gateway.metricsPort" -}}
{{- $config := .Values.envoy.config | default (.Files.Get "files/envoy.yaml") | fromYaml -}}
{{- $found := false -}}
{{- range (dig "static_resources" "listeners" list $config) -}}
{{- if eq (int (dig "address" "socket_address" "port_value" 0 .)) (int $.Values.metrics.port) }}{{ $found = true }}{{ end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "metrics.enabled: the Envoy configuration has no listener on metrics.port %d (its admin port is 127.0.0.1 only); add a stats listener to the configuration or turn metrics off" (int .Values.metrics.port)) -}}
{{- end -}}
{{- .Values.metrics.port -}}
{{- end -}}
