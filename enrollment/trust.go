package enrollment

// Trusted says whether relying parties (identity providers, access
// proxies) may treat the device as an approved company device, and when
// not, why. Only an approval makes a device trusted, and anything that
// casts doubt on it afterwards ends the trust at once: the owner disabled,
// the owner saying the enrollment was not theirs, or Apple's attestation
// contradicting what the device claimed.
func (e Enrollment) Trusted() (bool, string) {
	switch {
	case e.State != StateApproved:
		return false, "enrollment is " + string(e.State)
	case e.OwnerDisabled:
		return false, "owner disabled"
	case e.Suspicious:
		return false, "the owner says this enrollment was not them"
	case e.Attestation.Status == AttestMismatch:
		return false, "attestation mismatch: " + e.Attestation.Reason
	}
	return true, "approved"
}

// TrustChange is a change of a device's trust, as relying parties learn
// it: the CAEP device-compliance-change event.
type TrustChange struct {
	ID           string
	EnrollmentID string
	UserEmail    string
	Compliant    bool
	// Reason is for administrators (CAEP reason_admin).
	Reason string
	// Initiator is who caused it, in CAEP's terms: admin, user, policy
	// or system.
	Initiator string
}

// maxTrustReason bounds a trust change's reason: it travels in every
// event sent to every stream.
const maxTrustReason = 500

// TrustReason is reason as a trust change records it: valid UTF-8, bounded.
func TrustReason(reason string) string { return cut(reason, maxTrustReason) }
