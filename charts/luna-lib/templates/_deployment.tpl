{{/*
luna-lib.deployment: a Luna service Deployment. Env: the ConfigMap (luna-lib.configmap; its checksum rolls the pods
on change) plus the keys of .Values.existingSecret, plus .Values.extraEnv. Rolling updates never drop below the
desired count (maxUnavailable 0) and give streams time to finish (preStop sleep, then LUNA_SHUTDOWN_GRACE).
*/}}
{{- define "luna-lib.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "luna-lib.fullname" . }}
  labels:
    {{- include "luna-lib.labels" (dict "root" . "component" (.Values.component | default "server")) | nindent 4 }}
  {{- with .Values.deploymentAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: {{ .Values.revisionHistoryLimit | default 5 }}
  selector:
    matchLabels:
      {{- include "luna-lib.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: {{ .Values.rollingUpdate.maxSurge | default "25%" }}
  template:
    metadata:
      labels:
        {{- include "luna-lib.labels" (dict "root" . "component" (.Values.component | default "server")) | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "luna-lib.configEnv" . | sha256sum }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "luna-lib.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.serviceAccount.automountToken | default false }}
      {{- include "luna-lib.imagePullSecrets" . | nindent 6 }}
      securityContext:
        {{- include "luna-lib.podSecurityContext" . | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "luna-lib.terminationGracePeriodSeconds" . }}
      {{- include "luna-lib.schedulingFields" . | nindent 6 }}
      containers:
        - name: {{ .Values.containerName | default (include "luna-lib.name" .) }}
          image: {{ include "luna-lib.image" (dict "image" .Values.image "root" .) | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy | default "IfNotPresent" }}
          {{- with .Values.args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            {{- if .Values.ports.api }}
            - name: api
              containerPort: {{ .Values.ports.api }}
              protocol: TCP
            {{- end }}
            - name: admin
              containerPort: {{ .Values.ports.admin }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "luna-lib.fullname" . }}
          {{- if or (and .Values.existingSecret .Values.secretEnv) .Values.extraEnv }}
          env:
            {{- if .Values.existingSecret }}
            {{- include "luna-lib.secretEnv" . | nindent 12 }}
            {{- end }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- include "luna-lib.probes" . | nindent 10 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ .Values.lifecycle.preStopSleepSeconds }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- include "luna-lib.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            {{- include "luna-lib.tmpVolumeMount" . | nindent 12 }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "luna-lib.tmpVolume" . | nindent 8 }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}
