# Policy of the devsecops-app service (AppRole role "devsecops-app").
# Least privilege: read its own KV v2 secrets under secret/app/ and manage its own token.
# Anything not listed here is denied.

# KV v2 data and metadata of the app's secrets.
path "secret/data/app/*" {
  capabilities = ["read", "list"]
}

path "secret/metadata/app/*" {
  capabilities = ["read", "list"]
}

# Token lifecycle of the app's own token.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# Lets the app check what its token may do (used by readiness checks).
path "sys/capabilities-self" {
  capabilities = ["update"]
}
