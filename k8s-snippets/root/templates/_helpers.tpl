{{/* Whether the shared database is needed: an app it serves is active (its fuse on, in this profile).
With the full profile, whose apps cover every stack, that is the seed's rule (any fuse on); with the
pragmatic one, the backstage or cicd fuse. `sharedpg bootstrap --plan` says the same for the profile's spec. */}}
{{- define "platform.databaseNeeded" -}}
{{- if (include "platform.activeApps" . | trim) -}}true{{- end -}}
{{- end -}}

{{/* The apps whose fuse is on in this profile, as "name name ..." in a stable order. */}}
{{- define "platform.activeApps" -}}
{{- $root := . -}}
{{- range $name, $app := .Values.apps -}}
{{- if and (index $root.Values.fuses $app.stack) (has $root.Values.profile $app.profiles) -}}{{ $name }} {{ end -}}
{{- end -}}
{{- end -}}

{{/* The namespaces whose ExternalSecrets read Vault: the database's (admin, monitoring) and each active
app's, as "ns ns ..." without repeats. */}}
{{- define "platform.secretNamespaces" -}}
{{- $seen := dict "database" true -}}database {{ range $name := splitList " " (include "platform.activeApps" . | trim) -}}
{{- if $name -}}{{- $ns := (index $.Values.apps $name).namespace -}}
{{- if not (hasKey $seen $ns) -}}{{- $_ := set $seen $ns true -}}{{ $ns }} {{ end -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* Vault's address, refused unless https: the service-account token, the Vault token and every password
cross the pod network on this connection. */}}
{{- define "platform.vaultServer" -}}
{{- if not (hasPrefix "https://" .Values.vaultServer) -}}
{{- fail (printf "vaultServer %q: use https:// (the tokens and passwords cross the network); give vaultCABundle unless a public CA signed Vault's certificate" .Values.vaultServer) -}}
{{- end -}}
{{- .Values.vaultServer -}}
{{- end -}}

{{/* What every child Application shares: the finalizer, the destination, automated sync with retry. */}}
{{- define "platform.application" -}}
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {{ printf "%s%s" (.root.Values.applicationPrefix | default "") .name }}
  namespace: argocd
  annotations:
    argocd.argoproj.io/sync-wave: {{ .wave | quote }}
  finalizers:
    - resources-finalizer.argocd.argoproj.io
spec:
  project: default
  {{- .source | nindent 2 }}
  destination:
    server: https://kubernetes.default.svc
    namespace: {{ .namespace }}
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    retry:
      {{- toYaml .root.Values.retry | nindent 6 }}
{{- end -}}


{{/* The database's size for the profile, as the kustomize patches of its Application: the container's
resources, the two memory settings in its args (at their places in database/statefulset.yaml; the tests
check they land there), the volume. */}}
{{- define "platform.databaseSizing" -}}
- target: {kind: StatefulSet, name: shared-postgresql}
  patch: |-
    - op: replace
      path: /spec/template/spec/containers/0/resources
      value: {{ dict "requests" .requests "limits" .limits | toJson }}
    - op: replace
      path: /spec/template/spec/containers/0/args/3
      value: {{ printf "shared_buffers=%s" .sharedBuffers | quote }}
    - op: replace
      path: /spec/template/spec/containers/0/args/7
      value: {{ printf "effective_cache_size=%s" .effectiveCacheSize | quote }}
    - op: replace
      path: /spec/volumeClaimTemplates/0/spec/resources/requests/storage
      value: {{ .storage | quote }}
{{- end -}}


{{/* The sharedpg image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "platform.image" -}}
{{- if .Values.image.digest -}}
{{- if not (hasPrefix "sha256:" .Values.image.digest) -}}
{{- fail (printf "image.digest %q: give it as sha256:<64 hex digits>, or leave it empty to use image.tag" .Values.image.digest) -}}
{{- end -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* The same, as kustomize.images sets it: the manifests' image name "sharedpg" replaced by it. */}}
{{- define "platform.kustomizeImage" -}}
sharedpg={{ include "platform.image" . }}
{{- end -}}


{{/* Where this tree sits in the repository: the parent of the root chart's own path when the root
Application passes it (rootPath = $ARGOCD_APP_SOURCE_PATH, argocd/root-application.yaml), else path. */}}
{{- define "platform.path" -}}
{{- if .Values.rootPath -}}{{ dir .Values.rootPath }}{{- else -}}{{ .Values.path }}{{- end -}}
{{- end -}}


{{/* An app's cutover step (root values cutover.<app>.step): "" (none: the app on its tenant), old, copy or
shared; refused for an app that takes no cutover here, or a step that does not exist. */}}
{{- define "platform.cutoverStep" -}}
{{- $cut := index (.root.Values.cutover | default dict) .name | default dict -}}
{{- $step := $cut.step | default "" -}}
{{- if not (has $step (list "" "old" "copy" "shared")) -}}
{{- fail (printf "cutover.%s.step %q: use old, copy or shared (or \"\" when there is nothing to move), docs/cutover.md" .name $step) -}}
{{- end -}}
{{- if and $step (not $cut.from) -}}
{{- fail (printf "cutover.%s: %s takes no cutover here (Argo Workflows' archive is new with the shared server; Grafana's SQLite moves with copy-tenant --from-sqlite; for Dex's and Policy Reporter's, copy-tenant --from-sqlite says what not moving them costs; docs/cutover.md): remove it" .name .name) -}}
{{- end -}}
{{- if and $step (not (regexMatch "^[A-Za-z0-9._-]{1,63}$" (toString $cut.attempt))) -}}
{{- fail (printf "cutover.%s.attempt %q: use 1 to 63 letters, digits, '.', '_' or '-' (raise it to copy again)" .name (toString $cut.attempt)) -}}
{{- end -}}
{{- $step -}}
{{- end -}}


{{/* The database every client reaches (root values database.external, database.tls): its host name, as
its certificate names it; its port; "true" when TLS is on (always for an external server). Refused: an
external host that is not a host name, TLS without the CA to check the server's certificate against. */}}
{{- define "platform.databaseHost" -}}
{{- $host := .Values.database.external.host | default "" -}}
{{- if and $host (not (regexMatch "^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$" $host)) -}}
{{- fail (printf "database.external.host %q: give the server's host name alone, as its certificate names it (no scheme, port or path: the port is database.external.port)" $host) -}}
{{- end -}}
{{- $host | default "shared-postgresql.database.svc.cluster.local" -}}
{{- end -}}

{{- define "platform.databasePort" -}}
{{- if .Values.database.external.host -}}{{ .Values.database.external.port | default 5432 }}{{- else -}}5432{{- end -}}
{{- end -}}

{{- define "platform.databaseTLS" -}}
{{- if or .Values.database.tls.enabled .Values.database.external.host -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (.Values.database.tls.caBundle | default "")) -}}
{{- fail (printf "database.tls.caBundle: TLS is on (%s) and every client checks the server's certificate (verify-full): give the PEM of the CA that signed it, e.g. --set-file database.tls.caBundle=ca.crt" (ternary "an external server" "database.tls.enabled" (not (empty .Values.database.external.host)))) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* Where the CA is mounted in every client container (the ConfigMap sharedpg-database-ca's ca.crt). */}}
{{- define "platform.databaseCAPath" -}}/etc/sharedpg-database/ca.crt{{- end -}}


{{/* The database Application's kustomize patches beyond its size: an external server renders none of
the in-cluster server (its StatefulSet, Service, NetworkPolicy, and the hook's admin-password step: that
server's admin is the one it gave); the in-cluster server with TLS serves it with tls.serverSecret. */}}
{{- define "platform.databasePatches" -}}
{{- if .Values.database.external.host }}
{{- range $kind := list "apps/v1 StatefulSet" "v1 Service" "networking.k8s.io/v1 NetworkPolicy" }}
- patch: |-
    $patch: delete
    apiVersion: {{ first (splitList " " $kind) }}
    kind: {{ last (splitList " " $kind) }}
    metadata:
      name: shared-postgresql
      namespace: database
{{- end }}
- target: {kind: Job, name: sharedpg-admin-secret}
  patch: |-
    - op: remove
      path: /spec/template/spec/initContainers
{{- else }}
{{- include "platform.databaseSizing" (index .Values.database.sizing .Values.profile) }}
{{- if include "platform.databaseTLS" . }}
- target: {kind: StatefulSet, name: shared-postgresql}
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: "-c"
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: ssl=on
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: "-c"
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: ssl_cert_file=/etc/postgresql-tls/tls.crt
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: "-c"
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: ssl_key_file=/etc/postgresql-tls/tls.key
    - op: add
      path: /spec/template/spec/containers/0/volumeMounts/-
      value: {name: tls, mountPath: /etc/postgresql-tls, readOnly: true}
    - op: add
      path: /spec/template/spec/volumes/-
      value: {name: tls, secret: {secretName: {{ .Values.database.tls.serverSecret | quote }}, defaultMode: 0440}}
{{- end }}
{{- end }}
{{- end -}}


{{/* What a chart app takes from the database values through its chart's own keys, as its Application's
valuesObject (after the overlay, so it wins): the host and port where its chart has no other source, and with
TLS the chart's TLS keys with verify-full and the CA mounted at platform.databaseCAPath. The apps that read
host and port from their tenant's Secret (what bootstrap wrote beside the password) take only the TLS keys;
docs/facts-consumers.md §7a has each chart's keys and sources. Empty: nothing to set. */}}
{{- define "platform.databaseValues" -}}
{{- $root := .root -}}
{{- $host := include "platform.databaseHost" $root -}}
{{- $port := include "platform.databasePort" $root -}}
{{- $tls := not (empty (include "platform.databaseTLS" $root)) -}}
{{- $ca := include "platform.databaseCAPath" $root -}}
{{- if eq .name "sonarqube" }}
jdbcOverwrite:
  jdbcUrl: {{ printf "jdbc:postgresql://%s:%s/sonarqube%s" $host $port (ternary (printf "?sslmode=verify-full&sslrootcert=%s" $ca) "" $tls) | quote }}
{{- else if eq .name "argo-workflows" }}
controller:
  persistence:
    postgresql:
      host: {{ $host | quote }}
      port: {{ $port }}
      ssl: {{ $tls }}
      sslMode: {{ ternary "verify-full" "disable" $tls }}
{{- else if and (eq .name "grafana") $tls }}
grafana.ini:
  database:
    ssl_mode: verify-full
    ca_cert_path: {{ $ca }}
{{- else if and (eq .name "backstage") $tls }}
backstage:
  appConfig:
    backend:
      database:
        connection:
          ssl:
            rejectUnauthorized: true
            ca: {$file: {{ $ca }}}
{{- end }}
{{- end -}}
