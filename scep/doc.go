// Package scep is Vestibule's SCEP server (RFC 8894): it issues device
// identity certificates against one-time challenges that each belong to one
// reservation, and renews certificates of approved enrollments. Message
// formats are github.com/smallstep/scep's; the policy is here.
package scep
