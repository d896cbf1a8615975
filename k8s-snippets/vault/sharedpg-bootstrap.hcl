# Policy of the sharedpg bootstrap Job and of the admin-secret hook (Kubernetes auth role
# sharedpg-bootstrap): create and read the tenants' credentials, the shared server's admin secret and
# SonarQube's monitoring passcode (database/admin-secret-job.yaml) and serve-metrics' login (the spec's
# monitoring section), nothing else. No update (an existing
# secret is never overwritten: a rotation is a person's new version, which the Job only reads), no
# delete, no list. One path per tenant of the default spec
# (sharedpg_tools/default-spec.yaml); a test keeps the two equal. Add a path when you add a tenant.
path "secret/data/backstage/backstage/postgres" { capabilities = ["create", "read"] }
path "secret/data/backstage/dex/postgres" { capabilities = ["create", "read"] }
path "secret/data/cicd/sonarqube/postgres" { capabilities = ["create", "read"] }
path "secret/data/cicd/argo_workflows/postgres" { capabilities = ["create", "read"] }
path "secret/data/policies/policyreporter/postgres" { capabilities = ["create", "read"] }
path "secret/data/observability/grafana/postgres" { capabilities = ["create", "read"] }
path "secret/data/database/shared-postgresql/admin" { capabilities = ["create", "read"] }
path "secret/data/database/shared-postgresql/monitoring" { capabilities = ["create", "read"] }
path "secret/data/cicd/sonarqube/monitoring" { capabilities = ["create", "read"] }
