{{/*
luna-lib.networkPolicy: ingress to the api port only from the Luna apps in .Values.networkPolicy.apiFrom (names,
i.e. app.kubernetes.io/name of pods part-of luna; the gateway by default) and .extraApiFrom peers; to the admin port
only from .metricsFrom (Prometheus) and this release's helm test pods. Egress (when .egress.enabled): DNS, the Luna
apps in .egress.lunaServices on their api port, Postgres/Redis/NATS and the OpenTelemetry collector (peers and
ports configurable), .egress.extra.
*/}}
{{- define "luna-lib.lunaPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ . }}
      app.kubernetes.io/part-of: luna
{{- end -}}

{{- define "luna-lib.networkPolicy" -}}
{{- $n := .Values.networkPolicy -}}
{{- if $n.enabled -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "luna-lib.fullname" . }}
  labels:
    {{- include "luna-lib.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "luna-lib.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $n.egress.enabled }}
    - Egress
    {{- end }}
  ingress:
    {{- if and .Values.ports.api (or $n.apiFrom $n.extraApiFrom) }}
    - ports:
        - port: api
          protocol: TCP
      from:
        {{- range $n.apiFrom }}
        {{- include "luna-lib.lunaPeer" . | nindent 8 }}
        {{- end }}
        {{- with $n.extraApiFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- end }}
    - ports:
        - port: admin
          protocol: TCP
      from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/part-of: luna
              app.kubernetes.io/component: helm-test
        {{- with $n.metricsFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with $n.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if $n.egress.enabled }}
  egress:
    {{- if $n.egress.dns }}
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- end }}
    {{- if $n.egress.lunaServices }}
    - ports:
        - port: {{ $n.egress.lunaServicePort | default 8080 }}
          protocol: TCP
      to:
        {{- range $n.egress.lunaServices }}
        {{- include "luna-lib.lunaPeer" . | nindent 8 }}
        {{- end }}
    {{- end }}
    {{- range $name := list "postgres" "redis" "nats" "otelCollector" }}
    {{- $infra := index $n.egress $name | default dict }}
    {{- if $infra.enabled }}
    - ports:
        - port: {{ $infra.port }}
          protocol: TCP
      {{- with $infra.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- end }}
    {{- with $n.egress.extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end -}}
{{- end -}}
