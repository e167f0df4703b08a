package vaultkey

import "fmt"

// Policy returns the minimal Vault policy the server needs for a transit
// key: make and check HMACs, nothing else. configs/vault-policy.hcl is
// this for the default mount and key.
func Policy(mount, key string) string {
	return fmt.Sprintf(`# The Vault policy Vestibule's server needs: make and check enrollment-token
# HMACs with the transit key, nothing else. It cannot read, export or
# rotate the key.
#
#   vault policy write vestibule configs/vault-policy.hcl
#
# Rotation (an operator, not the server):
#   vault write -f %[1]s/keys/%[2]s/rotate
# New tokens use the new version; tokens made with older versions verify
# until those versions are retired:
#   vault write %[1]s/keys/%[2]s/config min_decryption_version=N
# after which verification refuses every version below N. Tokens live an
# hour (enrollment.token_ttl), so an hour after a rotation the old version
# can go.
path "%[1]s/hmac/%[2]s/*" {
  capabilities = ["update"]
}

path "%[1]s/verify/%[2]s/*" {
  capabilities = ["update"]
}
`, mount, key)
}
