// Package mdm is the Apple MDM protocol and nothing else: check-in and
// command-report plists and their decoding, command encoding, and the
// Mdm-Signature check over a request body. It knows no store, no policy and
// no transport; callers decide what to believe.
package mdm
