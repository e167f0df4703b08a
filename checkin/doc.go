// Package checkin is the device side of MDM: the check-in endpoint
// (Authenticate, TokenUpdate, CheckOut, ...) and the command connection.
// Three parts, each testable alone:
//
//   - Handler (http.go), the transport: content type, size limit, body,
//     status codes, the log line and the audit row of a refusal;
//   - Identifier (identity.go), which establishes who a device is from its
//     certificate (Mdm-Signature, TLS client certificate, or a trusted
//     proxy's RFC 9440 Client-Cert or escaped-PEM header) before any field
//     of the body is believed;
//   - Service (service.go), which dispatches an identified device's
//     message to the approval gate in package enrollment or its report to
//     the command queue; a pending device gets only the attestation
//     question, which asks and installs nothing.
package checkin
