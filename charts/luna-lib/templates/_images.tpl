{{/*
luna-lib.image: "<registry>/<repository>:<tag>". Call with (dict "image" .Values.image "root" .).
registry: .Values.global.imageRegistry when set (else image.registry); tag: .Values.global.imageTag when set, else
image.tag, else the chart's appVersion. image.digest (sha256:...) pins by digest instead of tag. Third-party images
(Envoy) pass "keepTag" true: global.imageTag is a Luna version and must not replace theirs.
*/}}
{{- define "luna-lib.image" -}}
{{- $root := .root -}}
{{- $g := $root.Values.global | default dict -}}
{{- $registry := $g.imageRegistry | default .image.registry | default "" -}}
{{- $tag := .image.tag | default $root.Chart.AppVersion | toString -}}
{{- if and $g.imageTag (not .keepTag) }}{{ $tag = $g.imageTag | toString }}{{ end -}}
{{- $repo := .image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* luna-lib.imagePullSecrets: global.imagePullSecrets then .Values.imagePullSecrets (names or {name} maps). */}}
{{- define "luna-lib.imagePullSecrets" -}}
{{- $secrets := concat ((.Values.global | default dict).imagePullSecrets | default list) (.Values.imagePullSecrets | default list) -}}
{{- if $secrets }}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}
