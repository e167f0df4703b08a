# The Vault policy Vestibule's server needs: make and check enrollment-token
# HMACs with the transit key, nothing else. It cannot read, export or
# rotate the key.
#
#   vault policy write vestibule configs/vault-policy.hcl
#
# Rotation (an operator, not the server):
#   vault write -f transit/keys/vestibule-token/rotate
# New tokens use the new version; tokens made with older versions verify
# until those versions are retired:
#   vault write transit/keys/vestibule-token/config min_decryption_version=N
# after which verification refuses every version below N. Tokens live an
# hour (enrollment.token_ttl), so an hour after a rotation the old version
# can go.
path "transit/hmac/vestibule-token/*" {
  capabilities = ["update"]
}

path "transit/verify/vestibule-token/*" {
  capabilities = ["update"]
}
