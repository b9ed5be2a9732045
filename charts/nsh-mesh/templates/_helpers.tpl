{{/* The release's full name, used for the operator's objects. */}}
{{- define "nsh-mesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nsh-mesh.labels" -}}
app.kubernetes.io/name: nsh-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: nsh-mesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "nsh-mesh.selector" -}}
app.kubernetes.io/name: nsh-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nsh-mesh.serviceAccountName" -}}
{{- default (include "nsh-mesh.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* An image reference: (dict "root" . "image" <{repository, tag, digest}>). An empty
repository is the nsh image; an empty tag is the chart's appVersion. */}}
{{- define "nsh-mesh.image" -}}
{{- $root := .root -}}
{{- $repository := default $root.Values.image.repository .image.repository -}}
{{- $tag := default $root.Chart.AppVersion .image.tag -}}
{{- if and (not .image.repository) $root.Values.image.tag (not .image.tag) -}}
{{- $tag = $root.Values.image.tag -}}
{{- end -}}
{{- $digest := .image.digest -}}
{{- if and (not .image.repository) (not $digest) -}}
{{- $digest = $root.Values.image.digest -}}
{{- end -}}
{{- $registry := $root.Values.imageRegistry -}}
{{- $name := ternary $repository (printf "%s/%s" $registry $repository) (empty $registry) -}}
{{- if $digest -}}
{{- printf "%s@%s" $name $digest -}}
{{- else -}}
{{- printf "%s:%s" $name $tag -}}
{{- end -}}
{{- end -}}
