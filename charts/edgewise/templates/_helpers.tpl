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
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "edgewise.selectorLabels" -}}
app.kubernetes.io/name: edgewise
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The registry prefix of every image, with a trailing "/" (or nothing). */}}
{{- define "edgewise.registryPrefix" -}}
{{- with .Values.imageRegistry -}}{{ trimSuffix "/" . }}/{{- end -}}
{{- end -}}

{{/* The operator's own image, registry included (the kubelet pulls it as is). */}}
{{- define "edgewise.operatorImage" -}}
{{- printf "%s%s:%s" (include "edgewise.registryPrefix" .) .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{/*
Images of the pods the operator renders, WITHOUT the registry: the operator prefixes
EDGEWISE_IMAGE_REGISTRY itself. Both Jetson tags come from the one NGC release, so the
TensorRT that builds a plan (tritonJetson) is the one that loads it (triton).
*/}}
{{- define "edgewise.agentImage" -}}
{{- printf "%s:%s" .Values.images.agent.repository (default .Chart.AppVersion .Values.images.agent.tag) -}}
{{- end -}}

{{- define "edgewise.onnxruntimeImage" -}}
{{- printf "%s:%s" .Values.images.onnxruntime.repository (default .Chart.AppVersion .Values.images.onnxruntime.tag) -}}
{{- end -}}

{{- define "edgewise.openvinoImage" -}}
{{- printf "%s:%s" .Values.images.openvino.repository (default .Chart.AppVersion .Values.images.openvino.tag) -}}
{{- end -}}

{{- define "edgewise.tritonJetsonImage" -}}
{{- $tag := printf "%s-%s" .Values.images.ngcRelease .Chart.AppVersion -}}
{{- printf "%s:%s" .Values.images.tritonJetson.repository (default $tag .Values.images.tritonJetson.tag) -}}
{{- end -}}

{{- define "edgewise.tritonImage" -}}
{{- $tag := printf "%s-py3-igpu" .Values.images.ngcRelease -}}
{{- printf "%s:%s" .Values.images.triton.repository (default $tag .Values.images.triton.tag) -}}
{{- end -}}

{{/* imagePullSecrets as names: the values accept names or {name: ...} objects. */}}
{{- define "edgewise.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- if kindIs "map" . -}}
{{- $names = append $names .name -}}
{{- else -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* A map as "k=v,k2=v2", the form EDGEWISE_* map settings take. */}}
{{- define "edgewise.selectorString" -}}
{{- $parts := list -}}
{{- range $k, $v := . -}}
{{- $parts = append $parts (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}
