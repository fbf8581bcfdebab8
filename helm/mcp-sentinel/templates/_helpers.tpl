{{/* Names, labels and the shared pieces every template uses. */}}

{{- define "mcp-sentinel.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The injector's objects: <release>-injector, or <release>-mcp-sentinel-injector. */}}
{{- define "mcp-sentinel.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mcp-sentinel.injectorName" -}}
{{- printf "%s-injector" (include "mcp-sentinel.fullname" .) -}}
{{- end -}}

{{- define "mcp-sentinel.labels" -}}
{{- if not .Values.plainManifests }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}
app.kubernetes.io/name: {{ include "mcp-sentinel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- if not .Values.plainManifests }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- end -}}

{{/* The values of the mcp-sentinel.io/inject label that opt a pod (or a namespace) in, as a
     JSON list: the same as OPT_IN_VALUES in src/k8s/mod.rs (tests/inject_deploy.rs compares). */}}
{{- define "mcp-sentinel.optInValues" -}}
["true", "enabled"]
{{- end -}}

{{- define "mcp-sentinel.injectorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-sentinel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{- define "mcp-sentinel.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The injector's TLS Secret: the user's (tls.existingSecret), or the one the chart's
     self-signed mode or cert-manager writes. */}}
{{- define "mcp-sentinel.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "mcp-sentinel.injectorName" .) -}}
{{- end -}}
{{- end -}}

{{/* DNS names the API server may use for the injector's Service. */}}
{{- define "mcp-sentinel.dnsNames" -}}
{{- $svc := include "mcp-sentinel.injectorName" . -}}
{{- $ns := .Release.Namespace -}}
{{- toJson (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) -}}
{{- end -}}

{{/* sidecar.nativeSidecar settled: "true" or "false" (auto: the cluster is 1.32 or later). */}}
{{- define "mcp-sentinel.nativeSidecar" -}}
{{- $native := .Values.sidecar.nativeSidecar -}}
{{- if eq (toString $native) "auto" -}}
{{- $native = semverCompare ">=1.32-0" .Capabilities.KubeVersion.Version -}}
{{- end -}}
{{- toString $native -}}
{{- end -}}

{{/* The release namespace and sidecar.namespaces, without duplicates, as JSON. */}}
{{- define "mcp-sentinel.sidecarNamespaces" -}}
{{- toJson (prepend .Values.sidecar.namespaces .Release.Namespace | uniq) -}}
{{- end -}}

{{/* Conflicting values stop the render, with what to change. */}}
{{- define "mcp-sentinel.validate" -}}
{{- $tr := .Values.sidecar.tokenReview -}}
{{- if and $tr.enabled (not $tr.audience) -}}
{{- fail "sidecar.tokenReview.enabled needs sidecar.tokenReview.audience: your API server's audience (its service-account issuer)" -}}
{{- end -}}
{{- if and $tr.serviceAccounts (not $tr.enabled) -}}
{{- fail "sidecar.tokenReview.serviceAccounts is set but sidecar.tokenReview.enabled is false" -}}
{{- end -}}
{{- if and .Values.injector.serviceCheck.enabled (ge (int .Values.injector.serviceCheck.timeoutSeconds) (int .Values.webhook.timeoutSeconds)) -}}
{{- fail "injector.serviceCheck.timeoutSeconds must be less than webhook.timeoutSeconds: the check runs inside the webhook's answer" -}}
{{- end -}}
{{- if eq (int .Values.sidecar.trafficPort) (int .Values.sidecar.adminPort) -}}
{{- fail (printf "sidecar.trafficPort and sidecar.adminPort must differ (both are %d)" (int .Values.sidecar.adminPort)) -}}
{{- end -}}
{{- $envNames := list -}}
{{- range .Values.sidecar.env -}}
{{- if has .name $envNames -}}
{{- fail (printf "sidecar.env sets %s twice" .name) -}}
{{- end -}}
{{- $envNames = append $envNames .name -}}
{{- end -}}
{{- if and .Values.tls.certManager.issuerRef (not .Values.tls.certManager.enabled) -}}
{{- fail "tls.certManager.issuerRef is set but tls.certManager.enabled is false" -}}
{{- end -}}
{{- end -}}
