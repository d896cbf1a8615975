# External Secrets in namespace backstage (Kubernetes auth role eso-backstage, bound to that namespace's service
# account sharedpg-secrets, which the namespace's SecretStore "vault" logs in with): read exactly what the
# ExternalSecrets of backstage ask for, nothing of another namespace's. No create, update, delete or list. A test
# keeps this equal to their remoteRefs, and the tree's wiring check refuses an ExternalSecret that asks for more.
path "secret/data/backstage/backstage/postgres" { capabilities = ["read"] }
path "secret/data/backstage/dex/postgres" { capabilities = ["read"] }
