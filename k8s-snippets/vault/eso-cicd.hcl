# External Secrets in namespace cicd (Kubernetes auth role eso-cicd, bound to that namespace's service
# account sharedpg-secrets, which the namespace's SecretStore "vault" logs in with): read exactly what the
# ExternalSecrets of cicd ask for, nothing of another namespace's. No create, update, delete or list. A test
# keeps this equal to their remoteRefs, and the tree's wiring check refuses an ExternalSecret that asks for more.
path "secret/data/cicd/sonarqube/postgres" { capabilities = ["read"] }
path "secret/data/cicd/argo_workflows/postgres" { capabilities = ["read"] }
path "secret/data/cicd/sonarqube/monitoring" { capabilities = ["read"] }
