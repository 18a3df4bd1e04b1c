{{/*
luna-lib.migrationsJob: the service's database migrations as a pre-install/pre-upgrade hook Job (image luna/migrate,
`luna-migrate --service <migrations.service>`), so a new version's pods start only after its schema exists; the
Deployment then sets LUNA_MIGRATE_ON_START=false. Hooks run before the release's own objects exist, so the Job reads
DATABASE_URL from .Values.existingSecret (created beforehand, outside the release) and uses the namespace's
default ServiceAccount (or migrations.serviceAccountName) with no API token.
*/}}
{{- define "luna-lib.migrationsJob" -}}
{{- $m := .Values.migrations -}}
{{- if $m.enabled -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "luna-lib.suffixed" (list . "migrate") }}
  labels:
    {{- include "luna-lib.labels" (dict "root" . "component" "migrations") | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ $m.hookWeight | default "-5" | quote }}
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: {{ $m.backoffLimit | default 3 }}
  activeDeadlineSeconds: {{ $m.activeDeadlineSeconds | default 600 }}
  ttlSecondsAfterFinished: {{ $m.ttlSecondsAfterFinished | default 86400 }}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ include "luna-lib.suffixed" (list . "migrate") }}
        app.kubernetes.io/instance: {{ .Release.Name }}
        app.kubernetes.io/part-of: luna
        app.kubernetes.io/component: migrations
    spec:
      restartPolicy: Never
      {{- with $m.serviceAccountName }}
      serviceAccountName: {{ . }}
      {{- end }}
      automountServiceAccountToken: false
      {{- include "luna-lib.imagePullSecrets" . | nindent 6 }}
      securityContext:
        {{- include "luna-lib.podSecurityContext" . | nindent 8 }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: migrate
          image: {{ include "luna-lib.image" (dict "image" $m.image "root" .) | quote }}
          imagePullPolicy: {{ $m.image.pullPolicy | default "IfNotPresent" }}
          args: ["--service", {{ $m.service | default (include "luna-lib.name" .) | quote }}]
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: {{ required "existingSecret is required when migrations.enabled (the hook Job reads DATABASE_URL from it)" .Values.existingSecret }}
                  key: DATABASE_URL
          resources:
            {{- toYaml $m.resources | nindent 12 }}
          securityContext:
            {{- include "luna-lib.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            {{- include "luna-lib.tmpVolumeMount" . | nindent 12 }}
      volumes:
        {{- include "luna-lib.tmpVolume" . | nindent 8 }}
{{- end -}}
{{- end -}}

{{/*
luna-lib.migrationsNetworkPolicy: the hook Job's pods may reach DNS and Postgres only (rendered as a hook too, so it
exists before the Job when NetworkPolicies default-deny).
*/}}
{{- define "luna-lib.migrationsNetworkPolicy" -}}
{{- $n := .Values.networkPolicy -}}
{{- if and .Values.migrations.enabled $n.enabled $n.egress.enabled -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "luna-lib.suffixed" (list . "migrate") }}
  labels:
    {{- include "luna-lib.labels" (dict "root" . "component" "migrations") | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ sub (int (.Values.migrations.hookWeight | default "-5")) 1 | quote }}
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "luna-lib.suffixed" (list . "migrate") }}
      app.kubernetes.io/instance: {{ .Release.Name }}
  policyTypes: [Ingress, Egress]
  egress:
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    - ports:
        - port: {{ $n.egress.postgres.port }}
          protocol: TCP
      {{- with $n.egress.postgres.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
{{- end -}}
