package ssf

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TrustCert is a device-trust certificate as relying parties see it.
type TrustCert struct {
	Serial       string     `json:"serial"`
	SHA256       string     `json:"sha256"`
	NotAfter     time.Time  `json:"not_after"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
}

// Devices answers the pull API's questions.
type Devices interface {
	Enrollment(ctx context.Context, id string) (enrollment.Enrollment, error)
	// DeviceTrustCertificates lists a device's trust certificates, newest first.
	DeviceTrustCertificates(ctx context.Context, id string) ([]TrustCert, error)
	// DeviceOfTrustCertificate finds the device a trust certificate was
	// issued to, and the certificate.
	DeviceOfTrustCertificate(ctx context.Context, sha256 string) (string, TrustCert, error)
}

// trustAnswer is what a relying party learns about a device.
type trustAnswer struct {
	DeviceID    string     `json:"device_id"`
	DeviceURI   string     `json:"device_uri"`
	User        string     `json:"user"`
	Trusted     bool       `json:"trusted"`
	Reason      string     `json:"reason"`
	State       string     `json:"state"`
	Serial      string     `json:"serial_number,omitempty"`
	Attested    bool       `json:"attested"`
	Certificate *TrustCert `json:"certificate,omitempty"`
	// CertificateValid: the certificate asked about (or the newest) is
	// live: not revoked, not expired, and the device trusted.
	CertificateValid bool `json:"certificate_valid"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// PullRoutes mounts the pull API for receivers that can only ask.
func (t *Transmitter) PullRoutes(mux *http.ServeMux, devices Devices) {
	mux.HandleFunc("GET /api/v1/trust/devices/{id}", t.auth(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		certs, err := devices.DeviceTrustCertificates(r.Context(), id)
		if err != nil {
			t.serverError(w, r, err)
			return
		}
		var c *TrustCert
		if len(certs) > 0 {
			c = &certs[0]
		}
		t.answer(w, r, devices, id, c)
	}))
	mux.HandleFunc("GET /api/v1/trust", t.auth(func(w http.ResponseWriter, r *http.Request) {
		sum := r.URL.Query().Get("cert_sha256")
		if !sha256Hex.MatchString(sum) {
			apiError(w, http.StatusBadRequest, "invalid_request", "cert_sha256 must be 64 hex digits: the SHA-256 of the certificate's DER")
			return
		}
		id, c, err := devices.DeviceOfTrustCertificate(r.Context(), toLowerHex(sum))
		if errors.Is(err, enrollment.ErrNotFound) {
			apiError(w, http.StatusNotFound, "not_found", "no device-trust certificate has this fingerprint")
			return
		}
		if err != nil {
			t.serverError(w, r, err)
			return
		}
		t.answer(w, r, devices, id, &c)
	}))
}

func (t *Transmitter) answer(w http.ResponseWriter, r *http.Request, devices Devices, id string, c *TrustCert) {
	e, err := devices.Enrollment(r.Context(), id)
	if errors.Is(err, enrollment.ErrNotFound) {
		apiError(w, http.StatusNotFound, "not_found", "no such device")
		return
	}
	if err != nil {
		t.serverError(w, r, err)
		return
	}
	ok, why := e.Trusted()
	a := trustAnswer{DeviceID: e.ID, DeviceURI: "urn:vestibule:device:" + e.ID, User: e.UserEmail, Trusted: ok, Reason: why,
		State: string(e.State), Serial: e.Facts.Serial, Attested: e.Attestation.Attested(), Certificate: c}
	if c != nil {
		a.CertificateValid = ok && c.RevokedAt == nil && t.o.Now().Before(c.NotAfter)
	}
	writeJSON(w, http.StatusOK, a)
}

func toLowerHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
