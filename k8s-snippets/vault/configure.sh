#!/bin/sh
# Vault (or OpenBao) for sharedpg, in the order a platform team does it; safe to re-run.
#
#   VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=<an operator's token> \
#   KUBERNETES_HOST=https://kubernetes.default.svc KUBERNETES_CA_CERT=ca.crt \
#   [TOKEN_REVIEWER_JWT=reviewer.jwt] [VAULT=bao] sh k8s-snippets/vault/configure.sh
#
# KUBERNETES_CA_CERT is the API server's CA (a file); TOKEN_REVIEWER_JWT a file with the token of a
# service account bound to system:auth-delegator. Vault running in the cluster can omit it (it then
# uses its own pod's token). The test suite runs this very script against a real OpenBao server.
set -eu
vault=${VAULT:-vault}
here=$(dirname "$0")
# The namespaces whose ExternalSecrets read Vault (the root chart's apps' namespaces, and database).
NAMESPACES="database backstage cicd policies observability"

# 1. The KV v2 engine at secret/ (each namespace's SecretStore reads path: secret, version: v2).
if ! $vault secrets list -format=json | grep -q '"secret/"'; then
    $vault secrets enable -path=secret -version=2 kv
fi

# 2. The policies: the bootstrap Job creates and reads; External Secrets only reads, one policy per
#    namespace (eso-<namespace>.hcl), each that namespace's paths and nothing else.
$vault policy write sharedpg-bootstrap "$here/sharedpg-bootstrap.hcl"
for namespace in $NAMESPACES; do
    $vault policy write "eso-$namespace" "$here/eso-$namespace.hcl"
done

# 3. The kubernetes auth method, told how to reach the TokenReview API.
if ! $vault auth list -format=json | grep -q '"kubernetes/"'; then
    $vault auth enable kubernetes
fi
if [ -n "${TOKEN_REVIEWER_JWT:-}" ]; then
    $vault write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST" \
        kubernetes_ca_cert=@"$KUBERNETES_CA_CERT" token_reviewer_jwt=@"$TOKEN_REVIEWER_JWT"
else
    $vault write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST" kubernetes_ca_cert=@"$KUBERNETES_CA_CERT"
fi

# 4. One role per service account: the bootstrap Job's (namespace database, k8s-snippets/bootstrap/), and
#    in each namespace that reads secrets the account its SecretStore logs in with (sharedpg-secrets, made
#    by the root chart): a token of namespace X gets X's policy alone. Short-lived tokens.
$vault write auth/kubernetes/role/sharedpg-bootstrap \
    bound_service_account_names=sharedpg-bootstrap bound_service_account_namespaces=database \
    token_policies=sharedpg-bootstrap token_ttl=15m token_max_ttl=1h
for namespace in $NAMESPACES; do
    $vault write "auth/kubernetes/role/eso-$namespace" \
        bound_service_account_names=sharedpg-secrets bound_service_account_namespaces="$namespace" \
        token_policies="eso-$namespace" token_ttl=1h token_max_ttl=4h
done
