{{/*
Labels of every object: the two deploy/base sets (name, part-of) and Helm's
own (instance, version, managed-by, chart), which the comparison test with
the kustomize install leaves out.
*/}}
{{- define "rollguard.labels" -}}
app.kubernetes.io/name: rollguard
app.kubernetes.io/part-of: rollguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The pods' selector: fixed, as in deploy/base. */}}
{{- define "rollguard.selector" -}}
app.kubernetes.io/name: rollguard
{{- end }}

{{/* The config as a map (empty without one); a config that is not YAML fails the render. */}}
{{- define "rollguard.config" -}}
{{- if .Values.config -}}
{{- $c := fromYaml .Values.config -}}
{{- if hasKey $c "Error" -}}
{{- fail (printf "config: not YAML: %s" (get $c "Error")) -}}
{{- end -}}
{{- toJson $c -}}
{{- else -}}
{}
{{- end -}}
{{- end }}

{{/* rbac.targetNamespaces, else the namespaces of the config's targets; as a JSON list. */}}
{{- define "rollguard.targetNamespaces" -}}
{{- $ns := .Values.rbac.targetNamespaces | default list -}}
{{- if not $ns -}}
{{- $cfg := include "rollguard.config" . | fromJson -}}
{{- range ($cfg.targets | default list) -}}
{{- $ns = append $ns .namespace -}}
{{- end -}}
{{- end -}}
{{- $ns | uniq | sortAlpha | toJson -}}
{{- end }}

{{/*
The lease the leader Role grants is "rollguard" in the release namespace:
a config that elects elsewhere would fail at run time, so fail here.
*/}}
{{- define "rollguard.checkConfig" -}}
{{- $cfg := include "rollguard.config" . | fromJson -}}
{{- $le := ($cfg.global | default dict).leaderElection | default dict -}}
{{- if $le.enabled -}}
{{- $ns := $le.namespace | default "rollguard" -}}
{{- if ne $ns .Release.Namespace -}}
{{- fail (printf "config: global.leaderElection.namespace is %q but the release namespace is %q: the leader Role is granted in the release namespace" $ns .Release.Namespace) -}}
{{- end -}}
{{- if ne ($le.leaseName | default "rollguard") "rollguard" -}}
{{- fail (printf "config: global.leaderElection.leaseName is %q: the leader Role grants the Lease \"rollguard\"" $le.leaseName) -}}
{{- end -}}
{{- end -}}
{{- end }}
