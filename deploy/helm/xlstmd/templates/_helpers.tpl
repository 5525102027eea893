{{/* Names: the release name, or release-chart when they differ, capped at 63 (DNS labels). */}}
{{- define "xlstmd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "xlstmd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "xlstmd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xlstmd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "xlstmd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "xlstmd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The daemon's image: digest wins, else tag, else appVersion (+ -cuda for GPUs). */}}
{{- define "xlstmd.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- $tag := $i.tag | default (printf "%s%s" .Chart.AppVersion (ternary "-cuda" "" .Values.gpu.enabled)) -}}
{{- printf "%s:%s" $i.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Seconds in a daemon duration ("90s", "1m30s", "500ms", "0"; a bare number is seconds),
     rounded up. Fails naming the key on anything else. Call with (list KEY VALUE). */}}
{{- define "xlstmd.seconds" -}}
{{- $key := index . 0 -}}
{{- $v := toString (index . 1) -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $v -}}
{{- ceil (float64 $v) -}}
{{- else if regexMatch "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$" $v -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9.]+(ms|s|m|h)" $v -1 -}}
{{- $n := float64 (regexFind "^[0-9.]+" .) -}}
{{- $total = addf $total (mulf $n (get $units (regexReplaceAll "^[0-9.]+" . ""))) -}}
{{- end -}}
{{- ceil $total -}}
{{- else -}}
{{- fail (printf "%s: %q is not a duration (use units: 30s, 1m, 1h30m)" $key $v) -}}
{{- end -}}
{{- end -}}

{{/* Whether the pods share a Redis tier. */}}
{{- define "xlstmd.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret.name .Values.redis.deploy -}}true{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: preStop sleep + drain-delay + grace-period + flush-timeout
     + 10 s for the process to exit; a shorter explicit value fails with the sum spelled out. */}}
{{- define "xlstmd.terminationGrace" -}}
{{- $grace := include "xlstmd.seconds" (list "config.grace-period" (index .Values.config "grace-period" | default "30s")) | int -}}
{{- $flush := include "xlstmd.seconds" (list "config.flush-timeout" (index .Values.config "flush-timeout" | default "1m")) | int -}}
{{- $sleep := .Values.shutdown.preStopSleepSeconds | int -}}
{{- $delay := include "xlstmd.seconds" (list "config.drain-delay" (index .Values.config "drain-delay" | default "0")) | int -}}
{{- $sleep = add $sleep $delay -}}
{{- $need := add $sleep $grace $flush 10 -}}
{{- $set := .Values.shutdown.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- $need -}}
{{- else if lt ($set | int) $need -}}
{{- fail (printf "shutdown.terminationGracePeriodSeconds: %d is too short: preStop sleep %ds + config.grace-period %ds + config.flush-timeout %ds + 10s to exit = %ds; raise it or shorten the drain (docs/deploy.md)" ($set | int) $sleep $grace $flush $need) -}}
{{- else -}}
{{- $set | int -}}
{{- end -}}
{{- end -}}

{{/* Cross-key rules the schema cannot say; included by every workload template. */}}
{{- define "xlstmd.validate" -}}
{{- $v := .Values -}}
{{- $replicas := $v.workload.replicas | int -}}
{{- if and (or (gt $replicas 1) $v.autoscaling.enabled) (not (include "xlstmd.redisEnabled" .)) -}}
{{- fail (printf "workload.replicas: %d replicas (or autoscaling.enabled) needs a shared Redis: docs/redis-tier.md (set redis.url, redis.existingSecret.name or redis.deploy), or sessions are lost when a client reaches another pod" $replicas) -}}
{{- end -}}
{{- if and $v.apiKeys.existingSecret.name $v.apiKeys.inline -}}
{{- fail "apiKeys: set either apiKeys.existingSecret.name or apiKeys.inline, not both" -}}
{{- end -}}
{{- if gt (len (compact (list $v.redis.url $v.redis.existingSecret.name (ternary "deploy" "" $v.redis.deploy)))) 1 -}}
{{- fail "redis: set one of redis.url, redis.existingSecret.name or redis.deploy" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (gt ($v.autoscaling.minReplicas | int) ($v.autoscaling.maxReplicas | int)) -}}
{{- fail "autoscaling.minReplicas: larger than autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and $v.state.existingClaim (or (eq $v.workload.kind "StatefulSet") (gt $replicas 1) $v.autoscaling.enabled) -}}
{{- fail "state.existingClaim: one claim cannot back several pods; use workload.kind StatefulSet (a claim per pod) or one replica" -}}
{{- end -}}
{{- if and (eq $v.image.tag "latest") (not $v.image.digest) -}}
{{- fail "image.tag: latest is not allowed; pin a version or a digest" -}}
{{- end -}}
{{- $_ := include "xlstmd.terminationGrace" . -}}
{{- end -}}

{{/* The hardened container security context, shared by every container of the chart. */}}
{{- define "xlstmd.containerSecurity" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}
