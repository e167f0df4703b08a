// Package devicesim behaves like an Apple device on the wire, for tests and
// the load generator: it reads a real enrollment profile, enrolls over SCEP,
// signs every check-in with an Mdm-Signature, and answers commands. It is a
// test double of a device, not of anything in Vestibule.
package devicesim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
	smallscep "github.com/smallstep/scep"
	"github.com/smallstep/scep/x509util"

	"github.com/vestibule-mdm/vestibule/mdm"
)

// Profile is what a device reads from an enrollment profile.
type Profile struct {
	// ACMEDirectory and ClientIdentifier are set by an ACME payload
	// (com.apple.security.acme), SCEPURL and Challenge by a SCEP one.
	ACMEDirectory    string
	ClientIdentifier string
	SCEPURL          string
	Challenge        string
	CN               string
	KeySize          int
	ServerURL        string
	CheckInURL       string
	Topic            string
}

// ParseProfile reads a signed (or unsigned) enrollment profile.
func ParseProfile(b []byte) (Profile, error) {
	p, err := parseSCEPProfile(b)
	if err != nil {
		return Profile{}, err
	}
	if (p.SCEPURL == "" && p.ACMEDirectory == "") || p.CheckInURL == "" || p.ServerURL == "" || p.CN == "" {
		return Profile{}, errors.New("profile lacks an identity (SCEP or ACME) or MDM payload")
	}
	return p, nil
}

// parseSCEPProfile reads the SCEP and MDM payloads a profile has.
func parseSCEPProfile(b []byte) (Profile, error) {
	content := b
	if p7, err := pkcs7.Parse(b); err == nil {
		if err := p7.Verify(); err != nil {
			return Profile{}, fmt.Errorf("profile signature: %w", err)
		}
		content = p7.Content
	}
	var doc struct {
		PayloadContent []map[string]any
	}
	if err := plist.Unmarshal(content, &doc); err != nil {
		return Profile{}, fmt.Errorf("profile: %w", err)
	}
	var p Profile
	for _, pl := range doc.PayloadContent {
		switch pl["PayloadType"] {
		case "com.apple.security.scep":
			c, _ := pl["PayloadContent"].(map[string]any)
			p.SCEPURL, _ = c["URL"].(string)
			p.Challenge, _ = c["Challenge"].(string)
			if ks, ok := c["Keysize"].(uint64); ok {
				p.KeySize = int(ks)
			}
			p.CN = subjectCN(c["Subject"])
		case "com.apple.security.acme":
			p.ACMEDirectory, _ = pl["DirectoryURL"].(string)
			p.ClientIdentifier, _ = pl["ClientIdentifier"].(string)
			p.CN = subjectCN(pl["Subject"])
		case "com.apple.mdm":
			p.ServerURL, _ = pl["ServerURL"].(string)
			p.CheckInURL, _ = pl["CheckInURL"].(string)
			p.Topic, _ = pl["Topic"].(string)
		}
	}
	return p, nil
}

// subjectCN reads the CN of a payload's Subject ([[["CN", value]]]).
func subjectCN(v any) string {
	if subj, ok := v.([]any); ok && len(subj) > 0 {
		if rdn, ok := subj[0].([]any); ok && len(rdn) > 0 {
			if kv, ok := rdn[0].([]any); ok && len(kv) == 2 {
				cn, _ := kv[1].(string)
				return cn
			}
		}
	}
	return ""
}

// Device is one simulated device.
type Device struct {
	UDID, Serial, Model, ModelName, OSVersion, DeviceName string

	Client  *http.Client
	Profile Profile
	Key     *rsa.PrivateKey
	Cert    *x509.Certificate
	// IdentityKey, when set (ACME), is the identity's key in place of Key.
	IdentityKey *ecdsa.PrivateKey
	// PushToken is what TokenUpdate sends.
	PushToken []byte
	// CacheSignatures reuses the Mdm-Signature of a body sent before. A real
	// device signs on its own processor; a load generator sharing the
	// server's cores would otherwise measure mostly its own RSA signing.
	CacheSignatures bool
	sigs            map[string]string
	// Attest answers a DeviceInformation question with a
	// DeviceAttestationNonce: the chain a Secure Enclave would return,
	// honest or not. Nil: the device answers without attestation, as an
	// OS too old to support it does.
	Attest func(nonce []byte) ([][]byte, error)
	// TrustCert and TrustKey are the device-trust identity a trust profile
	// installed, as the keychain would hold it.
	TrustCert    *x509.Certificate
	TrustKey     *rsa.PrivateKey
	TrustSCEPURL string
}

// RenewTrust renews the device-trust certificate over SCEP, signing the
// request with the current one, as a client renewing before expiry does.
func (d *Device) RenewTrust(ctx context.Context) error {
	if d.TrustCert == nil {
		return errors.New("no trust certificate to renew")
	}
	trust := &Device{Client: d.Client, Profile: Profile{SCEPURL: d.TrustSCEPURL}, Cert: d.TrustCert, Key: d.TrustKey}
	if err := trust.Renew(ctx); err != nil {
		return err
	}
	d.TrustCert, d.TrustKey = trust.Cert, trust.Key
	return nil
}

// ErrNotTrustProfile: the InstallProfile command carries another profile.
var ErrNotTrustProfile = errors.New("not a trust profile")

// InstallTrustProfile installs an InstallProfile command's profile that
// carries only a SCEP payload (the device-trust profile): it enrolls over
// SCEP with its own new key, keeping the MDM identity as it is.
func (d *Device) InstallTrustProfile(ctx context.Context, cmd *Command) error {
	var c struct {
		Command struct{ Payload []byte }
	}
	if err := plist.Unmarshal(cmd.Raw, &c); err != nil {
		return fmt.Errorf("InstallProfile: %w", err)
	}
	p, err := parseSCEPProfile(c.Command.Payload)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotTrustProfile, err)
	}
	if p.SCEPURL == "" || p.Challenge == "" || p.ServerURL != "" {
		return fmt.Errorf("%w: it must hold one SCEP payload and no MDM payload", ErrNotTrustProfile)
	}
	trust := &Device{Client: d.Client, Profile: p}
	if err := trust.enroll(ctx, p.Challenge, p.CN); err != nil {
		return fmt.Errorf("trust SCEP: %w", err)
	}
	d.TrustCert, d.TrustKey, d.TrustSCEPURL = trust.Cert, trust.Key, p.SCEPURL
	return nil
}

// sign returns the Mdm-Signature header value for body.
func (d *Device) sign(body []byte) (string, error) {
	if d.CacheSignatures {
		if sig, ok := d.sigs[string(body)]; ok {
			return sig, nil
		}
	}
	var key any = d.Key
	if d.IdentityKey != nil {
		key = d.IdentityKey
	}
	sig, err := mdm.Sign(body, d.Cert, key)
	if err != nil {
		return "", err
	}
	if d.CacheSignatures {
		if d.sigs == nil {
			d.sigs = map[string]string{}
		}
		d.sigs[string(body)] = sig
	}
	return sig, nil
}

// New returns a device with random identifiers.
func New(client *http.Client, serial string) *Device {
	tok := make([]byte, 32)
	_, _ = rand.Read(tok)
	return &Device{UDID: mdm.NewUUID(), Serial: serial, Model: "Mac14,9", ModelName: "MacBook Pro", OSVersion: "14.5", DeviceName: "Simulated Mac",
		Client: client, PushToken: tok}
}

// Install reads an enrollment profile, as a person installing it would.
func (d *Device) Install(profile []byte) error {
	p, err := ParseProfile(profile)
	if err != nil {
		return err
	}
	d.Profile = p
	return nil
}

// SCEPError is a SCEP failure answer.
type SCEPError struct{ FailInfo string }

func (e *SCEPError) Error() string { return "SCEP failure: " + e.FailInfo }

// Enroll gets the identity certificate over SCEP with the profile's
// challenge, generating a key unless the device already has one (a retry).
func (d *Device) Enroll(ctx context.Context) error {
	return d.enroll(ctx, d.Profile.Challenge, d.Profile.CN)
}

// EnrollWith lets a test choose the challenge and subject.
func (d *Device) EnrollWith(ctx context.Context, challenge, cn string) error {
	return d.enroll(ctx, challenge, cn)
}

func (d *Device) enroll(ctx context.Context, challenge, cn string) error {
	caCert, err := d.caCert(ctx)
	if err != nil {
		return err
	}
	raw, signer, err := d.PKCSReq(caCert, challenge, cn)
	if err != nil {
		return err
	}
	resp, err := d.do(ctx, http.MethodPost, d.Profile.SCEPURL+"?operation=PKIOperation", "application/x-pki-message", raw, nil)
	if err != nil {
		return err
	}
	if resp.status != http.StatusOK {
		return fmt.Errorf("SCEP: HTTP %d", resp.status)
	}
	rep, err := smallscep.ParsePKIMessage(resp.body, smallscep.WithCACerts([]*x509.Certificate{caCert}))
	if err != nil {
		return fmt.Errorf("SCEP reply: %w", err)
	}
	if rep.PKIStatus != smallscep.SUCCESS {
		return &SCEPError{FailInfo: rep.FailInfo.String()}
	}
	if err := rep.DecryptPKIEnvelope(signer, d.Key); err != nil {
		return fmt.Errorf("SCEP reply: %w", err)
	}
	d.Cert = rep.CertRepMessage.Certificate
	return nil
}

// Renew gets a new certificate for a new key over SCEP, signing the
// request with the current certificate instead of a challenge, as a device
// renewing its identity does.
func (d *Device) Renew(ctx context.Context) error {
	caCert, err := d.caCert(ctx)
	if err != nil {
		return err
	}
	newKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	reqDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: d.Cert.Subject.CommonName},
		SignatureAlgorithm: x509.SHA256WithRSA}, newKey)
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(reqDER)
	if err != nil {
		return err
	}
	msg, err := smallscep.NewCSRRequest(csr, &smallscep.PKIMessage{MessageType: smallscep.RenewalReq, Recipients: []*x509.Certificate{caCert},
		SignerKey: d.Key, SignerCert: d.Cert})
	if err != nil {
		return err
	}
	resp, err := d.do(ctx, http.MethodPost, d.Profile.SCEPURL+"?operation=PKIOperation", "application/x-pki-message", msg.Raw, nil)
	if err != nil {
		return err
	}
	if resp.status != http.StatusOK {
		return fmt.Errorf("SCEP renewal: HTTP %d", resp.status)
	}
	rep, err := smallscep.ParsePKIMessage(resp.body, smallscep.WithCACerts([]*x509.Certificate{caCert}))
	if err != nil {
		return fmt.Errorf("SCEP reply: %w", err)
	}
	if rep.PKIStatus != smallscep.SUCCESS {
		return &SCEPError{FailInfo: rep.FailInfo.String()}
	}
	if err := rep.DecryptPKIEnvelope(d.Cert, d.Key); err != nil {
		return fmt.Errorf("SCEP reply: %w", err)
	}
	d.Cert, d.Key = rep.CertRepMessage.Certificate, newKey
	return nil
}

// PKCSReq builds the SCEP request a device sends, without sending it, and
// returns it with the self-signed certificate the reply is encrypted to.
// It generates the device key unless the device has one.
func (d *Device) PKCSReq(caCert *x509.Certificate, challenge, cn string) ([]byte, *x509.Certificate, error) {
	if d.Key == nil {
		bits := d.Profile.KeySize
		if bits == 0 {
			bits = 2048
		}
		var err error
		if d.Key, err = rsa.GenerateKey(rand.Reader, bits); err != nil {
			return nil, nil, err
		}
	}
	reqDER, err := x509util.CreateCertificateRequest(rand.Reader, &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, SignatureAlgorithm: x509.SHA256WithRSA},
		ChallengePassword:  challenge,
	}, d.Key)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.ParseCertificateRequest(reqDER)
	if err != nil {
		return nil, nil, err
	}
	signer, err := selfSigned(d.Key, cn)
	if err != nil {
		return nil, nil, err
	}
	msg, err := smallscep.NewCSRRequest(csr, &smallscep.PKIMessage{MessageType: smallscep.PKCSReq, Recipients: []*x509.Certificate{caCert},
		SignerKey: d.Key, SignerCert: signer})
	if err != nil {
		return nil, nil, err
	}
	return msg.Raw, signer, nil
}

func (d *Device) caCert(ctx context.Context) (*x509.Certificate, error) {
	resp, err := d.do(ctx, http.MethodGet, d.Profile.SCEPURL+"?operation=GetCACert", "", nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, fmt.Errorf("GetCACert: HTTP %d", resp.status)
	}
	return x509.ParseCertificate(resp.body)
}

func selfSigned(key *rsa.PrivateKey, cn string) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

type response struct {
	status int
	body   []byte
}

func (d *Device) do(ctx context.Context, method, url, contentType string, body []byte, header http.Header) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := d.Client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: b}, err
}

// Checkin sends a check-in message signed with the device certificate and
// returns the HTTP status.
func (d *Device) Checkin(ctx context.Context, msg map[string]any) (int, error) {
	body, err := plist.Marshal(msg)
	if err != nil {
		return 0, err
	}
	return d.SendSigned(ctx, d.Profile.CheckInURL, "application/x-apple-aspen-mdm-checkin", body)
}

// SendSigned PUTs body with an Mdm-Signature made by the device key.
func (d *Device) SendSigned(ctx context.Context, url, contentType string, body []byte) (int, error) {
	h := http.Header{}
	if d.Cert != nil {
		sig, err := d.sign(body)
		if err != nil {
			return 0, err
		}
		h.Set(mdm.SignatureHeader, sig)
	}
	resp, err := d.do(ctx, http.MethodPut, url, contentType, body, h)
	return resp.status, err
}

// Authenticate sends the Authenticate check-in.
func (d *Device) Authenticate(ctx context.Context) (int, error) {
	return d.Checkin(ctx, d.authenticateMessage())
}

func (d *Device) authenticateMessage() map[string]any {
	return map[string]any{"MessageType": "Authenticate", "UDID": d.UDID, "SerialNumber": d.Serial, "Model": d.Model,
		"ModelName": d.ModelName, "ProductName": d.Model, "OSVersion": d.OSVersion, "BuildVersion": "23F79", "DeviceName": d.DeviceName,
		"Topic": d.Profile.Topic}
}

// TokenUpdate sends the push token.
func (d *Device) TokenUpdate(ctx context.Context) (int, error) {
	return d.Checkin(ctx, d.tokenUpdateMessage())
}

func (d *Device) tokenUpdateMessage() map[string]any {
	return map[string]any{"MessageType": "TokenUpdate", "UDID": d.UDID, "Topic": d.Profile.Topic,
		"Token": d.PushToken, "PushMagic": "push-magic-" + d.UDID, "AwaitingConfiguration": false}
}

// SignCheckinsAhead signs the Authenticate and TokenUpdate bodies now and
// turns CacheSignatures on, so that a benchmark of the server does not
// time the device's own RSA signing.
func (d *Device) SignCheckinsAhead() error {
	d.CacheSignatures = true
	for _, msg := range []map[string]any{d.authenticateMessage(), d.tokenUpdateMessage()} {
		body, err := plist.Marshal(msg)
		if err != nil {
			return err
		}
		if _, err := d.sign(body); err != nil {
			return err
		}
	}
	return nil
}

// CheckOut says the profile was removed.
func (d *Device) CheckOut(ctx context.Context) (int, error) {
	return d.Checkin(ctx, map[string]any{"MessageType": "CheckOut", "UDID": d.UDID, "Topic": d.Profile.Topic})
}

// Command is a command the server sent.
type Command struct {
	UUID        string
	RequestType string
	Raw         []byte
}

// Connect sends a command report and returns the server's answer: status,
// and the next command if there is one.
func (d *Device) Connect(ctx context.Context, status, commandUUID string) (int, *Command, error) {
	report := map[string]any{"UDID": d.UDID, "Status": status}
	if commandUUID != "" {
		report["CommandUUID"] = commandUUID
	}
	return d.Report(ctx, report)
}

// Answer acknowledges cmd as a device would: a DeviceInformation question
// is answered with the device's facts and, when it carries a nonce and
// Attest is set, the attestation chain.
func (d *Device) Answer(ctx context.Context, cmd *Command) (int, *Command, error) {
	report := map[string]any{"UDID": d.UDID, "Status": "Acknowledged", "CommandUUID": cmd.UUID}
	if cmd.RequestType == "DeviceInformation" {
		var q struct {
			Command struct{ DeviceAttestationNonce []byte }
		}
		if err := plist.Unmarshal(cmd.Raw, &q); err != nil {
			return 0, nil, fmt.Errorf("command: %w", err)
		}
		responses := map[string]any{"UDID": d.UDID, "SerialNumber": d.Serial, "Model": d.Model, "OSVersion": d.OSVersion}
		if q.Command.DeviceAttestationNonce != nil && d.Attest != nil {
			chain, err := d.Attest(q.Command.DeviceAttestationNonce)
			if err != nil {
				return 0, nil, err
			}
			certs := make([]any, len(chain))
			for i, c := range chain {
				certs[i] = c
			}
			responses["DevicePropertiesAttestation"] = certs
		}
		report["QueryResponses"] = responses
	}
	return d.Report(ctx, report)
}

// Report sends a command report and returns the server's answer.
func (d *Device) Report(ctx context.Context, report map[string]any) (int, *Command, error) {
	body, err := plist.Marshal(report)
	if err != nil {
		return 0, nil, err
	}
	h := http.Header{}
	sig, err := d.sign(body)
	if err != nil {
		return 0, nil, err
	}
	h.Set(mdm.SignatureHeader, sig)
	resp, err := d.do(ctx, http.MethodPut, d.Profile.ServerURL, "application/x-apple-aspen-mdm", body, h)
	if err != nil || resp.status != http.StatusOK || len(resp.body) == 0 {
		return resp.status, nil, err
	}
	var cmd struct {
		CommandUUID string
		Command     struct{ RequestType string }
	}
	if err := plist.Unmarshal(resp.body, &cmd); err != nil {
		return resp.status, nil, fmt.Errorf("command: %w", err)
	}
	return resp.status, &Command{UUID: cmd.CommandUUID, RequestType: cmd.Command.RequestType, Raw: resp.body}, nil
}

// DrainCommands acknowledges every command until the server has none, and
// returns the request types in the order received.
func (d *Device) DrainCommands(ctx context.Context, limit int) ([]string, error) {
	var types []string
	code, cmd, err := d.Connect(ctx, "Idle", "")
	for range limit {
		if err != nil {
			return types, err
		}
		if code != http.StatusOK {
			return types, fmt.Errorf("connect: HTTP %d", code)
		}
		if cmd == nil {
			return types, nil
		}
		types = append(types, cmd.RequestType)
		code, cmd, err = d.Answer(ctx, cmd)
	}
	return types, fmt.Errorf("still getting commands after %d", limit)
}
