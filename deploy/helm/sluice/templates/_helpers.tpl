{{/* Names, labels and shared values of the sluice chart. */}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "sluice.fullname" -}}
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

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end }}

{{/* The headless Service that gives each pod its stable DNS name (peer traffic). */}}
{{- define "sluice.headlessName" -}}
{{- printf "%s-headless" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the bootstrap admin key: the user's or the chart's own. */}}
{{- define "sluice.adminSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-admin" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Paths inside the node container. */}}
{{- define "sluice.dataDir" -}}/var/lib/sluice{{- end }}
{{- define "sluice.configDir" -}}/etc/sluice/config{{- end }}
{{- define "sluice.tlsDir" -}}/etc/sluice/tls{{- end }}
{{- define "sluice.keyringDir" -}}/var/run/sluice/keyring{{- end }}

{{/* The kinesis URL scheme clients use. */}}
{{- define "sluice.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* Values that only make sense together; checked once, at render time. */}}
{{- define "sluice.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and .Values.tls.clientCA (not .Values.tls.enabled) }}
{{- fail "tls.clientCA needs tls.enabled" }}
{{- end }}
{{- if and .Values.tls.enabled (gt (int .Values.replicaCount) 1) (not .Values.tls.peerCA) }}
{{- fail "tls.enabled with replicaCount > 1 needs tls.peerCA: nodes verify each other against the Secret's ca.crt" }}
{{- end }}
{{- end }}

{{/* Non-empty when nodes call each other over TLS: TLS on and more than one node. */}}
{{- define "sluice.tlsPeers" -}}
{{- if and .Values.tls.enabled .Values.tls.peerCA (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The ClusterRole (cluster-scoped, so named after the namespace too) of zoneFromNode. */}}
{{- define "sluice.nodeReaderName" -}}
{{- printf "%s-%s-node-reader" .Release.Namespace (include "sluice.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* The node's TOML configuration. TLS and the keyring path are given as flags instead. */}}
{{- define "sluice.toml" -}}
data_dir = {{ include "sluice.dataDir" . | quote }}
kinesis_addr = "0.0.0.0:4567"
grpc_addr = "0.0.0.0:50051"
admin_addr = "0.0.0.0:9090"
region = {{ .Values.config.region | quote }}
account_id = {{ .Values.config.accountId | quote }}
fsync = {{ .Values.config.fsync }}
throughput_limits = {{ .Values.config.throughputLimits }}
log_level = {{ .Values.config.logLevel | quote }}
log_format = {{ .Values.config.logFormat | quote }}
auth = {{ ternary "sigv4" "none" .Values.auth.enabled | quote }}
{{- with .Values.config.segmentBytes }}
segment_bytes = {{ int64 . }}
{{- end }}
{{- with .Values.config.retentionCheckSecs }}
retention_check_secs = {{ int64 . }}
{{- end }}
{{- with .Values.config.shardLimit }}
shard_limit = {{ int64 . }}
{{- end }}
{{- with .Values.config.deadNodeGraceSecs }}
dead_node_grace_secs = {{ int64 . }}
{{- end }}
{{- end }}
