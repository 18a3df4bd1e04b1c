{{/*
luna-lib.service: the ClusterIP Service (name = fullname, the kit's default URLs) with the api port (h2c: gRPC,
gRPC-Web and Connect) and the admin port (/metrics, /healthz, /readyz).
luna-lib.headlessService: "<fullname>-headless", one DNS record per ready pod, for Envoy's STRICT_DNS clusters and
gRPC clients that balance per pod (a ClusterIP pins one HTTP/2 connection to one pod).
*/}}
{{- define "luna-lib.servicePorts" -}}
{{- if .Values.ports.api }}
- name: api
  port: {{ .Values.ports.api }}
  targetPort: api
  protocol: TCP
  appProtocol: kubernetes.io/h2c
{{- end }}
- name: admin
  port: {{ .Values.ports.admin }}
  targetPort: admin
  protocol: TCP
  appProtocol: http
{{- end -}}

{{- define "luna-lib.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "luna-lib.fullname" . }}
  labels:
    {{- include "luna-lib.labels" (dict "root" . "component" (.Values.component | default "server")) | nindent 4 }}
  {{- with (.Values.service | default dict).annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: ClusterIP
  selector:
    {{- include "luna-lib.selectorLabels" . | nindent 4 }}
  ports:
    {{- include "luna-lib.servicePorts" . | nindent 4 }}
{{- end -}}

{{- define "luna-lib.headlessService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "luna-lib.suffixed" (list . "headless") }}
  labels:
    {{- include "luna-lib.labels" (dict "root" . "component" (.Values.component | default "server")) | nindent 4 }}
    luna.dev/headless: "true"
spec:
  type: ClusterIP
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- include "luna-lib.selectorLabels" . | nindent 4 }}
  ports:
    {{- include "luna-lib.servicePorts" . | nindent 4 }}
{{- end -}}
