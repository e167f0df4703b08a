// Package acme is the subset of an ACME server (RFC 8555) that Apple's
// client uses for a device identity whose key never leaves the Secure
// Enclave: directory, nonces, accounts, an order for one
// permanent-identifier (the profile's one-time ClientIdentifier), its
// device-attest-01 challenge, finalize and certificate download.
//
// The ClientIdentifier binds the order to one reservation; the
// device-attest-01 answer must be an Apple attestation (fmt "apple"),
// chaining to the pinned Apple root, whose freshness code is SHA-256 of
// the challenge token (required, never skipped); finalize accepts only a
// CSR for the attested key. The attested serial and UDID are recorded with
// the certificate, and the approval gate compares them with what the
// device claims.
package acme
