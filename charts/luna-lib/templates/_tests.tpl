{{/*
luna-lib.testPod: `helm test` pod — the service's own image (it has node) asks the Service's /readyz on the admin
port, i.e. Service → pod routing, the NetworkPolicy, and the service's dependencies (readiness checks them).
*/}}
{{- define "luna-lib.testPod" -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "luna-lib.suffixed" (list . "test") }}
  labels:
    app.kubernetes.io/name: {{ include "luna-lib.suffixed" (list . "test") }}
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/part-of: luna
    app.kubernetes.io/component: helm-test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  {{- include "luna-lib.imagePullSecrets" . | nindent 2 }}
  securityContext:
    {{- include "luna-lib.podSecurityContext" . | nindent 4 }}
  containers:
    - name: readyz
      image: {{ include "luna-lib.image" (dict "image" .Values.image "root" .) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy | default "IfNotPresent" }}
      command:
        - node
        - -e
        - >-
          fetch(process.argv[1], { signal: AbortSignal.timeout(10000) })
          .then(async (r) => { console.log(r.status, await r.text()); process.exit(r.ok ? 0 : 1); },
          (e) => { console.error(String(e)); process.exit(1); })
        - http://{{ include "luna-lib.fullname" . }}:{{ .Values.ports.admin }}/readyz
      resources:
        requests: { cpu: 10m, memory: 32Mi }
        limits: { cpu: 200m, memory: 128Mi }
      securityContext:
        {{- include "luna-lib.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        {{- include "luna-lib.tmpVolumeMount" . | nindent 8 }}
  volumes:
    {{- include "luna-lib.tmpVolume" . | nindent 4 }}
{{- end -}}
