// Package vaultkey holds the enrollment-token key: the local key file
// signer for development, and the Vault transit signer for production, in
// which the key never leaves Vault. Both implement enrollment.Signer.
package vaultkey
