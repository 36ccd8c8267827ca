{{/* Chart name, truncated for label values. */}}
{{- define "docflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name, at most 40 characters: resources append -edge, -core, -provision-<revision>, ... */}}
{{- define "docflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every resource; input: dict "ctx" <root> "component" <name>. */}}
{{- define "docflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: docflow
{{ include "docflow.selectorLabels" . }}
{{- end }}

{{/* Selector labels; input: dict "ctx" <root> "component" <name>. */}}
{{- define "docflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "docflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "docflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "docflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The edge's own account (serviceaccount.yaml): no cloud role on the internet-facing pods. */}}
{{- define "docflow.edgeServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-edge" (include "docflow.serviceAccountName" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "docflow.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* The Secret with DATABASE_URL, DOCFLOW_JWT_SECRET and the NATS users' passwords. */}}
{{- define "docflow.secretName" -}}
{{- default (printf "%s-secrets" (include "docflow.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "docflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* NATS URL for edge, core and the provisioning Job: natsUrl, or the bundled nats chart's Service (same naming rule as that chart). */}}
{{- define "docflow.natsUrl" -}}
{{- if .Values.natsUrl }}
{{- .Values.natsUrl }}
{{- else if not .Values.nats.enabled }}
{{- fail "natsUrl is required when nats.enabled=false" }}
{{- else if .Values.nats.fullnameOverride }}
{{- printf "nats://%s:4222" (.Values.nats.fullnameOverride | trunc 63 | trimSuffix "-") }}
{{- else if contains "nats" .Release.Name }}
{{- printf "nats://%s:4222" (.Release.Name | trunc 63 | trimSuffix "-") }}
{{- else }}
{{- printf "nats://%s:4222" (printf "%s-nats" .Release.Name | trunc 63 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
Spread a component's pods across zones (best effort) and nodes (required: one node's loss must not
take both cores, or most edges); input: dict "ctx" <root> "component" <name>.
*/}}
{{- define "docflow.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "docflow.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: DoNotSchedule
    labelSelector:
      matchLabels:
        {{- include "docflow.selectorLabels" . | nindent 8 }}
{{- end }}
