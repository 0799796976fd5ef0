{{/* Base name of every object: the release name, with "-spindle" unless it already says so. */}}
{{- define "spindle.fullname" -}}
{{- if contains "spindle" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-spindle" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spindle.operator.name" -}}{{ include "spindle.fullname" . }}-operator{{- end -}}
{{- define "spindle.agent.name" -}}{{ include "spindle.fullname" . }}-agent{{- end -}}

{{/* Labels of every object; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "spindle.labels" -}}
{{ include "spindle.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: spindle
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "spindle.selectorLabels" -}}
app.kubernetes.io/name: spindle
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference; pass (dict "ctx" $ "image" .Values.agent.image). */}}
{{- define "spindle.image" -}}
{{- $tag := .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- with .ctx.Values.image.registry -}}{{ trimSuffix "/" . }}/{{- end -}}
{{ .image.repository }}:{{ $tag }}
{{- end -}}

{{- define "spindle.tlsSecret" -}}{{ include "spindle.fullname" .ctx }}-{{ .component }}-tls{{- end -}}

{{/* The ConfigMap holding the CA certificate agents check the operator's certificate against. */}}
{{- define "spindle.agentCA" -}}{{ include "spindle.fullname" . }}-agent-ca{{- end -}}

{{/* The agent's Localhost seccomp profile, named after the image tag so that an upgrade never
     changes the profile of an agent that is already running. */}}
{{- define "spindle.agent.seccompProfileName" -}}
spindle/agent-{{ .Values.image.tag | default .Chart.AppVersion }}.json
{{- end -}}

{{- define "spindle.csi.controller.name" -}}{{ include "spindle.fullname" . }}-csi-controller{{- end -}}
{{- define "spindle.csi.node.name" -}}{{ include "spindle.fullname" . }}-csi-node{{- end -}}
{{/* The CSI driver's name: fixed, StorageClasses and PersistentVolumes refer to it. */}}
{{- define "spindle.csi.driverName" -}}csi.spindle.dev{{- end -}}
