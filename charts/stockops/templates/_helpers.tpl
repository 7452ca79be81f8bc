{{/*
Names, labels and shared values of the stockops chart.
*/}}

{{- define "stockops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "stockops.fullname" -}}
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

{{- define "stockops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stockops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stockops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object, without the component. */}}
{{- define "stockops.commonLabels" -}}
helm.sh/chart: {{ include "stockops.chart" . }}
app.kubernetes.io/name: {{ include "stockops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stockops
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "stockops.labels" -}}
{{ include "stockops.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "stockops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stockops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Cluster-wide unless a single namespace is watched. */}}
{{- define "stockops.clusterwide" -}}
{{- if .Values.watchNamespace }}false{{ else }}true{{ end }}
{{- end }}

{{/* Where the workloads run: the watched namespace, else the release's. */}}
{{- define "stockops.workloadNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{- define "stockops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "stockops.workloadImage" -}}
{{- printf "%s:%s" .Values.workload.image.repository (default .Chart.AppVersion .Values.workload.image.tag) }}
{{- end }}

{{/*
Least privilege for exactly what the operator does, in the watched namespace(s). The e2e tests
render these rules and run the operator against a real API server with only these permissions.
*/}}
{{- define "stockops.operatorRules" -}}
# The custom resources: watch them; patch kopf's bookkeeping annotations.
- apiGroups: [stockops.io]
  resources: [stockmodels, retrainschedules]
  verbs: [get, list, watch, patch, update]
# Conditions, versions and run results go to the status subresource.
- apiGroups: [stockops.io]
  resources: [stockmodels/status, retrainschedules/status]
  verbs: [get, patch, update]
# Owner references with blockOwnerDeletion on the objects it creates need this.
- apiGroups: [stockops.io]
  resources: [stockmodels/finalizers, retrainschedules/finalizers]
  verbs: [update]
# train and deploy Jobs: created per run, pruned by the history limits and by Replace.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# feed and sink Deployments.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# The spec handed to each workload as a mounted ConfigMap.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
# A finished train Job's result, read from its Pod's termination message (or log).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# An Event for every decision (kopf posts core Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
