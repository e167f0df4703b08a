// Package trust turns an approval into device trust that the rest of the
// company can use: a device-trust certificate from a CA of its own (never
// the SCEP identity CA), issued only while the enrollment is trusted, and
// revocation that reaches relying parties within seconds (a CRL re-signed
// on every change, and an OCSP responder). The compliance events for
// identity providers are in trust/ssf.
//
// Whether a device is trusted is decided in enrollment (Enrollment.Trusted);
// the store records each change of it atomically with the change of state.
package trust
