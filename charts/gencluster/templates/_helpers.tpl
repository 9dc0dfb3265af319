{{/*
Names and labels shared by every template. Kubernetes names are limited to 63 characters
(DNS labels), hence the truncation.
*/}}

{{- define "gencluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name alone when it already contains the chart name (so
`helm install gencluster` gives "gencluster", not "gencluster-gencluster").
*/}}
{{- define "gencluster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gencluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release (a Deployment's selector is immutable). */}}
{{- define "gencluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gencluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The selector labels as key=value,key=value (GENCLUSTER_OPERATOR_POD_LABELS). */}}
{{- define "gencluster.selectorLabelList" -}}
{{- $pairs := list }}
{{- range $key, $value := include "gencluster.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The recommended labels minus app.kubernetes.io/component, which each object sets. */}}
{{- define "gencluster.labelsWithoutComponent" -}}
helm.sh/chart: {{ include "gencluster.chart" . }}
app.kubernetes.io/name: {{ include "gencluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gencluster
{{- end }}

{{- define "gencluster.labels" -}}
{{ include "gencluster.labelsWithoutComponent" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "gencluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gencluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gencluster.metricsServiceName" -}}
{{- printf "%s-metrics" (include "gencluster.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gencluster.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "gencluster.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtimeImage.repository (default .Chart.AppVersion .Values.runtimeImage.tag) }}
{{- end }}

{{/*
The operator's scope flags: every namespace, or only watchNamespace (which may differ from the
release namespace the operator itself runs in).
*/}}
{{- define "gencluster.watchArgs" -}}
{{- if .Values.watchNamespace }}
- --namespace={{ .Values.watchNamespace }}
{{- else }}
- --all-namespaces
{{- end }}
{{- end }}
