{{- define "cogwork.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end -}}
{{- define "cogwork.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "cogwork.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "cogwork.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "cogwork.fullname" .) -}}
{{- end -}}
{{/* Secret holding the report endpoint's tls.crt/tls.key/ca.crt; empty in mode operator. */}}
{{- define "cogwork.reportTLSSecret" -}}
{{- $tls := .Values.report.tls -}}
{{- if eq $tls.mode "secret" -}}{{ required "report.tls.secretName is required in mode secret" $tls.secretName }}
{{- else if or (eq $tls.mode "helm") (eq $tls.mode "certManager") -}}{{ include "cogwork.fullname" . }}-report-tls
{{- end -}}
{{- end -}}
{{/* Namespaces that get the trainer ServiceAccount. */}}
{{- define "cogwork.trainerNamespaces" -}}
{{- $all := concat (list .Release.Namespace) .Values.watchNamespaces .Values.trainer.serviceAccount.extraNamespaces -}}
{{- toJson (uniq $all) -}}
{{- end -}}
