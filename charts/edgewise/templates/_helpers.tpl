{{- define "edgewise.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgewise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "edgewise.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "edgewise.labels" -}}
app.kubernetes.io/name: edgewise
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: edgewise
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "edgewise.selectorLabels" -}}
app.kubernetes.io/name: edgewise
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "edgewise.operatorImage" -}}
{{- $image := printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- if .Values.imageRegistry -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.imageRegistry) $image -}}
{{- else -}}
{{- $image -}}
{{- end -}}
{{- end -}}

{{/* A map as "k=v,k2=v2", the form EDGEWISE_* map settings take. */}}
{{- define "edgewise.selectorString" -}}
{{- $parts := list -}}
{{- range $k, $v := . -}}
{{- $parts = append $parts (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}
