# External Secrets in namespace observability (Kubernetes auth role eso-observability, bound to that namespace's service
# account sharedpg-secrets, which the namespace's SecretStore "vault" logs in with): read exactly what the
# ExternalSecrets of observability ask for, nothing of another namespace's. No create, update, delete or list. A test
# keeps this equal to their remoteRefs, and the tree's wiring check refuses an ExternalSecret that asks for more.
path "secret/data/observability/grafana/postgres" { capabilities = ["read"] }
