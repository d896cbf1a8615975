# Policy of the External Secrets Operator (Kubernetes auth role external-secrets, used by the
# ClusterSecretStore "vault"): read exactly the secrets the ExternalSecrets in k8s-snippets/ ask for.
# No create, update, delete or list. A test keeps this equal to their remoteRefs.
path "secret/data/backstage/backstage/postgres" { capabilities = ["read"] }
path "secret/data/backstage/dex/postgres" { capabilities = ["read"] }
path "secret/data/cicd/sonarqube/postgres" { capabilities = ["read"] }
path "secret/data/cicd/argo_workflows/postgres" { capabilities = ["read"] }
path "secret/data/policies/policyreporter/postgres" { capabilities = ["read"] }
path "secret/data/observability/grafana/postgres" { capabilities = ["read"] }
path "secret/data/database/shared-postgresql/admin" { capabilities = ["read"] }
path "secret/data/database/shared-postgresql/monitoring" { capabilities = ["read"] }
path "secret/data/cicd/sonarqube/monitoring" { capabilities = ["read"] }
