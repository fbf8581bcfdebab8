{{/*
The sidecar, rendered from files/sidecar.yaml exactly as the injector renders it
(src/k8s/template.rs; the file's header is the contract): each ${NAME} placeholder replaced by
its value as JSON, then `native` merged into the container for a native sidecar, sidecar.env
appended to its env (replacing an entry of the same name), and the tokenReview mount and volume
appended when TokenReview is on.

Arguments (a dict): root (the top context), upstreamUrl, trafficPortName.
Returns YAML of: container, native (bool), volumes, podLabels, podAnnotations, upstreamPortName.
Use: $s := include "mcp-sentinel.sidecar" (dict "root" $ "upstreamUrl" ... ) | fromYaml
*/}}
{{- define "mcp-sentinel.sidecar" -}}
{{- $v := .root.Values -}}
{{- $tr := $v.sidecar.tokenReview -}}
{{- $values := dict
      "IMAGE" (include "mcp-sentinel.image" .root)
      "IMAGE_PULL_POLICY" $v.image.pullPolicy
      "UPSTREAM_URL" .upstreamUrl
      "TRAFFIC_PORT_NAME" .trafficPortName
      "TRAFFIC_PORT" (int $v.sidecar.trafficPort)
      "ADMIN_PORT" (int $v.sidecar.adminPort)
      "RESOURCES" (include "mcp-sentinel.sidecarResources" .root | fromJson)
      "CONFIG_MAP" $v.sidecar.configMapName
      "SECRET" $v.sidecar.secretName
      "TOKEN_AUDIENCE" (ternary $tr.audience "" $tr.enabled)
      "TOKEN_EXPIRATION_SECONDS" (ternary (int $tr.expirationSeconds) 3600 $tr.enabled) -}}
{{- $text := .root.Files.Get "files/sidecar.yaml" -}}
{{- range $name, $value := $values -}}
{{- $text = replace (printf "${%s}" $name) (toJson $value) $text -}}
{{- end -}}
{{- $doc := fromYaml $text -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "files/sidecar.yaml does not render: %s" $doc.Error) -}}
{{- end -}}
{{- $container := $doc.container -}}
{{- $volumes := $doc.volumes -}}
{{- $native := eq (include "mcp-sentinel.nativeSidecar" .root) "true" -}}
{{- if $native -}}
{{- $container = mergeOverwrite $container $doc.native -}}
{{- end -}}
{{- if $v.sidecar.env -}}
{{- $names := list -}}
{{- range $v.sidecar.env -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $env := list -}}
{{- range $container.env -}}
{{- if not (has .name $names) -}}
{{- $env = append $env . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $container "env" (concat $env $v.sidecar.env) -}}
{{- end -}}
{{- if $tr.enabled -}}
{{- $_ := set $container "volumeMounts" (append $container.volumeMounts $doc.tokenReview.volumeMount) -}}
{{- $volumes = append $volumes $doc.tokenReview.volume -}}
{{- end -}}
{{- toYaml (dict
      "container" $container
      "native" $native
      "volumes" $volumes
      "podLabels" $doc.podLabels
      "podAnnotations" $doc.podAnnotations
      "upstreamPortName" $doc.upstreamPortName) -}}
{{- end -}}

{{/* sidecar.resources with every quantity as a string, as JSON (the injector reads the same). */}}
{{- define "mcp-sentinel.sidecarResources" -}}
{{- $out := dict -}}
{{- range $kind, $quantities := .Values.sidecar.resources -}}
{{- $m := dict -}}
{{- range $k, $q := $quantities -}}
{{- $_ := set $m $k (toString $q) -}}
{{- end -}}
{{- if $m -}}
{{- $_ := set $out $kind $m -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
