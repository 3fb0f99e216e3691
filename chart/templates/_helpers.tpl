{{/*
Names. With the release named `trafficmap` (as in ../config/), objects are `trafficmap-operator`,
`trafficmap-sniffer`, `trafficmap-operator-tls`, `trafficmap-ca`.
*/}}
{{- define "trafficmap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "trafficmap.operator" -}}{{ include "trafficmap.fullname" . }}-operator{{- end -}}
{{- define "trafficmap.sniffer" -}}{{ include "trafficmap.fullname" . }}-sniffer{{- end -}}
{{/* The Secret the operator keeps its generated serving certificate and CA in. */}}
{{- define "trafficmap.tlsSecret" -}}{{ include "trafficmap.operator" . }}-tls{{- end -}}
{{/* The ConfigMap the operator publishes the CA in; the sniffers mount it. */}}
{{- define "trafficmap.caConfigMap" -}}{{ include "trafficmap.fullname" . }}-ca{{- end -}}
{{/* The ConfigMap where a stopping operator leaves its history of addresses for the next. */}}
{{- define "trafficmap.handoverConfigMap" -}}{{ include "trafficmap.fullname" . }}-handover{{- end -}}
{{/* The leader-election Lease. */}}
{{- define "trafficmap.lease" -}}{{ include "trafficmap.operator" . }}{{- end -}}

{{/* Labels every object carries; `component` is operator, sniffer or crds. No Helm-only labels,
so ../config/ (rendered from this chart) says nothing untrue. */}}
{{- define "trafficmap.labels" -}}
app.kubernetes.io/name: trafficmap
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: trafficmap
{{- end -}}

{{/* Labels that select a component's pods (never change them: selectors are immutable). */}}
{{- define "trafficmap.selector" -}}
app.kubernetes.io/name: trafficmap
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trafficmap.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* A CRD from files/crds, labelled, and kept on uninstall when crds.keep is set. */}}
{{- define "trafficmap.crd" -}}
{{- $crd := .root.Files.Get .file | fromYaml -}}
{{- $meta := $crd.metadata -}}
{{- $_ := set $meta "labels" (merge (include "trafficmap.labels" (dict "root" .root "component" "crds") | fromYaml) ($meta.labels | default dict)) -}}
{{- if .root.Values.crds.keep -}}
{{- $_ := set $meta "annotations" (merge (dict "helm.sh/resource-policy" "keep") ($meta.annotations | default dict)) -}}
{{- end -}}
{{ toYaml $crd }}
{{- end -}}
