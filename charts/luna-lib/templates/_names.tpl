{{/*
Names. Luna runs one platform per namespace, so objects are named after the service (Service "auth", Deployment
"auth"), not "<release>-<chart>": the kit's defaults (http://auth:8080, the JWKS URL) then work unchanged whether a
service is installed by its own release or by the umbrella. Kubernetes limits names to 63 characters.
*/}}

{{/* luna-lib.name: the chart's name or .Values.nameOverride. */}}
{{- define "luna-lib.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* luna-lib.fullname: .Values.fullnameOverride, else the name (see above). */}}
{{- define "luna-lib.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "luna-lib.name" . -}}
{{- end -}}
{{- end -}}

{{/* luna-lib.suffixed: fullname + "-" + suffix, truncated so the whole stays within 63. Call with (list . "headless"). */}}
{{- define "luna-lib.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $max := sub 62 (len $suffix) | int -}}
{{- printf "%s-%s" (include "luna-lib.fullname" $root | trunc $max | trimSuffix "-") $suffix -}}
{{- end -}}

{{/* luna-lib.chart: chart name and version for the helm.sh/chart label. */}}
{{- define "luna-lib.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* luna-lib.serviceAccountName */}}
{{- define "luna-lib.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "luna-lib.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
