package server

import (
	"context"

	"github.com/vestibule-mdm/vestibule/checkin"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// checkinCertificates is the store as the check-in service sees
// certificates.
type checkinCertificates struct{ store *store.Store }

// CertificateBySHA256 returns what check-in needs to know of a certificate.
func (c checkinCertificates) CertificateBySHA256(ctx context.Context, fingerprint string) (checkin.CertRecord, error) {
	r, err := c.store.CheckinRecord(ctx, fingerprint)
	if err != nil {
		return checkin.CertRecord{}, err
	}
	return checkin.CertRecord{ReservationID: r.ReservationID, NotAfter: r.NotAfter, RevokedAt: r.RevokedAt,
		Attested:   enrollment.IdentityAttestation{HardwareBound: r.HardwareBound, Serial: r.AttestedSerial, UDID: r.AttestedUDID},
		Enrollment: r.Enrollment, NoCommands: r.NoCommands}, nil
}
