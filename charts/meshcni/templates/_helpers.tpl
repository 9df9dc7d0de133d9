{{/* SPDX-License-Identifier: MIT OR Apache-2.0 */}}

{{/* The image reference: digest wins over tag; the tag defaults to appVersion. */}}
{{- define "meshcni.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "meshcni.labels" -}}
app.kubernetes.io/part-of: meshcni
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* CNI host directories: the preset, each overridden by an explicit value. */}}
{{- define "meshcni.cniDirs" -}}
{{- $presets := dict
  "kind" (dict "bin" "/opt/cni/bin" "conf" "/etc/cni/net.d")
  "kubeadm" (dict "bin" "/opt/cni/bin" "conf" "/etc/cni/net.d")
  "k3s" (dict "bin" "/var/lib/rancher/k3s/data/cni" "conf" "/var/lib/rancher/k3s/agent/etc/cni/net.d")
  "custom" (dict "bin" "" "conf" "") -}}
{{- $p := get $presets .Values.cni.preset -}}
{{- $bin := .Values.cni.binDir | default $p.bin -}}
{{- $conf := .Values.cni.confDir | default $p.conf -}}
{{- if or (not $bin) (not $conf) -}}
{{- fail "cni.preset=custom needs both cni.binDir and cni.confDir (the container runtime's CNI directories on the node)" -}}
{{- end -}}
{{- dict "bin" $bin "conf" $conf | toJson -}}
{{- end -}}

{{/*
The API server for KUBERNETES_SERVICE_HOST/PORT, from k8sServiceHost/k8sServicePort
or from upstream's agent.clusterURL ("https://HOST[:PORT]", IPv6 in brackets).
JSON {"host": "", "port": ""}; host empty = the in-cluster default.
*/}}
{{- define "meshcni.apiServer" -}}
{{- $host := .Values.k8sServiceHost | toString -}}
{{- $port := .Values.k8sServicePort | toString -}}
{{- with .Values.agent.clusterURL -}}
{{- if $host -}}
{{- fail "set the API server once: k8sServiceHost/k8sServicePort or agent.clusterURL (upstream's spelling), not both" -}}
{{- end -}}
{{- $u := urlParse . -}}
{{- $hp := $u.host -}}
{{- $port = ternary "443" "80" (eq $u.scheme "https") -}}
{{- if hasPrefix "[" $hp -}}
{{- $host = regexReplaceAll "^\\[([^\\]]+)\\].*$" $hp "${1}" -}}
{{- $rest := regexReplaceAll "^\\[[^\\]]+\\]" $hp "" -}}
{{- if $rest }}{{ $port = trimPrefix ":" $rest }}{{ end -}}
{{- else if contains ":" $hp -}}
{{- $host = (splitList ":" $hp | first) -}}
{{- $port = (splitList ":" $hp | last) -}}
{{- else -}}
{{- $host = $hp -}}
{{- end -}}
{{- end -}}
{{- dict "host" $host "port" (ternary $port "" (ne $host "")) | toJson -}}
{{- end -}}

{{- define "meshcni.apiServerEnv" -}}
{{- $api := include "meshcni.apiServer" . | fromJson -}}
{{- if $api.host -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ $api.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $api.port | quote }}
{{- end -}}
{{- end -}}

{{- define "meshcni.logLevel" -}}
{{- .component.logLevel | default .root.Values.logLevel -}}
{{- end -}}

{{/* Pod annotations: the user's, plus the scrape annotations. */}}
{{- define "meshcni.podAnnotations" -}}
{{- $a := deepCopy (.component.podAnnotations | default dict) -}}
{{- if .root.Values.metrics.scrapeAnnotations -}}
{{- $_ := set $a "prometheus.io/scrape" "true" -}}
{{- $_ := set $a "prometheus.io/port" (.component.metricsPort | toString) -}}
{{- $_ := set $a "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- if $a -}}
annotations:
  {{- toYaml $a | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "meshcni.probes" -}}
{{- $port := .port -}}
{{- range $i, $name := list "startupProbe" "livenessProbe" "readinessProbe" }}
{{- $path := ternary "/healthz" "/readyz" (eq $name "livenessProbe") }}
{{- if $i }}{{ "\n" }}{{ end -}}
{{ $name }}:
  httpGet: {path: {{ $path }}, port: {{ $port }}{{ if $.host }}, host: {{ $.host }}{{ end }}}
  {{- toYaml (get $.component $name) | nindent 2 }}
{{- end -}}
{{- end -}}
