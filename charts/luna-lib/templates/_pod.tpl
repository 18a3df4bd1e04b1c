{{/*
Pieces of a Luna pod, shared by the Deployment, the migrations Job, the helm test pod (and other charts' pods).
The images run as uid/gid 10001 with a read-only root filesystem; /tmp is the only writable path (an emptyDir).
*/}}

{{/* luna-lib.podSecurityContext: .Values.podSecurityContext merged over the hardened defaults. */}}
{{- define "luna-lib.podSecurityContext" -}}
{{- $d := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 "fsGroup" 10001 "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $d (.Values.podSecurityContext | default dict | deepCopy)) -}}
{{- end -}}

{{/* luna-lib.containerSecurityContext: .Values.securityContext merged over the hardened defaults. */}}
{{- define "luna-lib.containerSecurityContext" -}}
{{- $d := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "privileged" false "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $d (.Values.securityContext | default dict | deepCopy)) -}}
{{- end -}}

{{/* luna-lib.tmpVolume / luna-lib.tmpVolumeMount: the writable /tmp. */}}
{{- define "luna-lib.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end -}}
{{- define "luna-lib.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
luna-lib.runtimeEnv: the variables the charts compute (ports from .Values.ports, the shutdown grace from
.Values.lifecycle, migrations on start off when the hook Job runs them), as a map.
*/}}
{{- define "luna-lib.runtimeEnv" -}}
{{- $e := dict -}}
{{- if .Values.ports.api }}{{ $_ := set $e "LUNA_PORT" (toString .Values.ports.api) }}{{ end -}}
{{- $_ := set $e "LUNA_ADMIN_PORT" (toString .Values.ports.admin) -}}
{{- $_ := set $e "LUNA_SHUTDOWN_GRACE" (printf "%ds" (int .Values.lifecycle.shutdownGraceSeconds)) -}}
{{- if hasKey .Values "migrations" }}{{ $_ := set $e "LUNA_MIGRATE_ON_START" (ternary "false" "true" (.Values.migrations.enabled | default false)) }}{{ end -}}
{{- toYaml $e -}}
{{- end -}}

{{/* luna-lib.configEnv: runtimeEnv, then .Values.env, then .Values.envOverrides (later wins); values as strings. */}}
{{- define "luna-lib.configEnv" -}}
{{- $e := include "luna-lib.runtimeEnv" . | fromYaml -}}
{{- range $k, $v := .Values.env }}{{ if not (kindIs "invalid" $v) }}{{ $_ := set $e $k (toString $v) }}{{ end }}{{ end -}}
{{- range $k, $v := .Values.envOverrides }}{{ if not (kindIs "invalid" $v) }}{{ $_ := set $e $k (toString $v) }}{{ end }}{{ end -}}
{{- toYaml $e -}}
{{- end -}}

{{/*
luna-lib.secretEnv: env entries read from .Values.existingSecret (created before the release: a pre-install hook
cannot read a Secret the same release creates). .Values.secretEnv: [{name, key?, optional?}].
*/}}
{{- define "luna-lib.secretEnv" -}}
{{- $secret := .Values.existingSecret -}}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .key | default .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/* luna-lib.probeHandler: (dict "root" . "kind" "liveness"|"readiness"|"startup"). */}}
{{- define "luna-lib.probeHandler" -}}
{{- $p := .root.Values.probes -}}
{{- if eq ($p.type | default "http") "grpc" -}}
grpc:
  port: {{ .root.Values.ports.api }}
{{- else -}}
httpGet:
  path: {{ ternary "/readyz" "/healthz" (eq .kind "readiness") }}
  port: admin
{{- end -}}
{{- end -}}

{{/* luna-lib.probes: startup (when enabled), liveness and readiness probes from .Values.probes. */}}
{{- define "luna-lib.probes" -}}
{{- $root := . -}}
{{- range $kind := list "startup" "liveness" "readiness" }}
{{- $cfg := index $root.Values.probes $kind | default dict }}
{{- if ne (toString (dig "enabled" true $cfg)) "false" }}
{{ $kind }}Probe:
  {{- include "luna-lib.probeHandler" (dict "root" $root "kind" $kind) | nindent 2 }}
  {{- range $f := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
  {{- if hasKey $cfg $f }}
  {{ $f }}: {{ index $cfg $f }}
  {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
luna-lib.terminationGracePeriodSeconds: preStop sleep (endpoints removal reaches Envoy and clients) + the
service's own drain (LUNA_SHUTDOWN_GRACE) + a margin, so the kubelet never kills a pod still closing streams.
*/}}
{{- define "luna-lib.terminationGracePeriodSeconds" -}}
{{- $l := .Values.lifecycle -}}
{{- add (int $l.preStopSleepSeconds) (int $l.shutdownGraceSeconds) (int $l.terminationMarginSeconds) -}}
{{- end -}}

{{/* luna-lib.schedulingFields: nodeSelector, affinity, tolerations, topology spread, priority class. */}}
{{- define "luna-lib.schedulingFields" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or .Values.topologySpreadConstraints (dig "enabled" false (.Values.topologySpread | default dict)) }}
topologySpreadConstraints:
  {{- with .Values.topologySpreadConstraints }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- if dig "enabled" false (.Values.topologySpread | default dict) }}
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable | default "ScheduleAnyway" }}
    labelSelector:
      matchLabels:
        {{- include "luna-lib.selectorLabels" $ | nindent 8 }}
  {{- end }}
  {{- end }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
