package scep

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"
	smallscep "github.com/smallstep/scep"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// Certificate is the record of an issued certificate.
type Certificate struct {
	Serial        string
	SHA256        string
	Subject       string
	NotBefore     time.Time
	NotAfter      time.Time
	ReservationID string
	KeySHA256     string
	TransactionID string
	DER           []byte
	IssuedAt      time.Time
	RevokedAt     *time.Time
	RevokeReason  string
	// HardwareBound: the key was made in the Secure Enclave and attested by
	// Apple (ACME device-attest-01), with these identifiers.
	HardwareBound  bool
	AttestedSerial string
	AttestedUDID   string
}

// Store is what issuance needs from storage.
type Store interface {
	// OpenReservationForChallenge returns the ID of the open, unexpired
	// reservation whose unused challenge has this hash, or ErrNotFound.
	OpenReservationForChallenge(ctx context.Context, challengeHash string, now time.Time) (string, error)
	// IssuedByTransaction finds a certificate issued for a transaction ID
	// and public key (a device retrying after a lost reply).
	IssuedByTransaction(ctx context.Context, transactionID, keySHA256 string) (Certificate, error)
	// RecordIssued stores cert and, when challengeHash is set, consumes that
	// challenge of cert's reservation in the same transaction: if it is no
	// longer unused, open and unexpired, nothing is stored and the error
	// wraps ErrConflict.
	RecordIssued(ctx context.Context, cert Certificate, challengeHash string, now time.Time, ev enrollment.AuditEvent) error
	// CertificateBySHA256 finds a certificate we issued.
	CertificateBySHA256(ctx context.Context, fingerprint string) (Certificate, error)
	// EnrollmentApproved reports whether the enrollment of a reservation is
	// approved and its owner enabled: only then may its certificate renew.
	EnrollmentApproved(ctx context.Context, reservationID string) (bool, error)
	AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error
}

// Options configure the service.
type Options struct {
	Authority Authority
	Store     Store
	// Validity of issued certificates.
	Validity time.Duration
	// MinRSABits is the smallest device key accepted.
	MinRSABits int
	// Decorate, when set, adds to every certificate's template what this
	// CA's certificates carry besides the subject (names, revocation
	// pointers). subjectID is the certificate's CN.
	Decorate func(ctx context.Context, subjectID string, tmpl *x509.Certificate) error
	// Name prefixes the audit actions ("scep" when empty): one service per
	// CA, each telling its own issuances apart.
	Name   string
	Logger *slog.Logger
	Now    func() time.Time
}

// Validate names what is wrong.
func (o Options) Validate() error {
	switch {
	case o.Authority == nil:
		return errors.New("scep: Authority is required")
	case o.Store == nil:
		return errors.New("scep: Store is required")
	case o.Validity < time.Hour:
		return errors.New("scep: Validity must be at least 1h")
	case o.MinRSABits < 2048:
		return errors.New("scep: MinRSABits must be at least 2048")
	}
	if _, ok := o.Authority.Certificate().PublicKey.(*rsa.PublicKey); !ok {
		return errors.New("scep: the CA key must be RSA: SCEP clients encrypt their requests to it")
	}
	return nil
}

// Service issues device certificates.
type Service struct {
	ca       Authority
	store    Store
	validity time.Duration
	minBits  int
	decorate func(ctx context.Context, subjectID string, tmpl *x509.Certificate) error
	name     string
	log      *slog.Logger
	now      func() time.Time
}

var setCipher sync.Once

// New returns the SCEP service.
func New(o Options) (*Service, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// The pkcs7 library chooses the cipher of every envelope it makes from
	// a package variable whose default is DES. Responses to devices must be
	// AES; nothing else in Vestibule encrypts with pkcs7.
	setCipher.Do(func() { pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC })
	if o.Name == "" {
		o.Name = "scep"
	}
	return &Service{ca: o.Authority, store: o.Store, validity: o.Validity, minBits: o.MinRSABits, decorate: o.Decorate, name: o.Name,
		log: o.Logger, now: o.Now}, nil
}

// refusal is a request refused with a SCEP failure: info goes to the device,
// reason to the log and the audit log. A temporary refusal is the server's
// own fault (its database, its signer): the device is told to come back
// (HTTP 503) instead of getting a permanent failure.
type refusal struct {
	info      smallscep.FailInfo
	reason    error
	temporary bool
}

func (r *refusal) Error() string { return r.reason.Error() }

func refuse(info smallscep.FailInfo, format string, args ...any) *refusal {
	return &refusal{info: info, reason: fmt.Errorf(format, args...)}
}

// unavailable is a refusal caused by the server, not the request.
func unavailable(format string, args ...any) *refusal {
	return &refusal{reason: fmt.Errorf(format, args...), temporary: true}
}

// ErrUnavailable means the server could not answer for a reason of its own;
// the device should retry later.
var ErrUnavailable = errors.New("SCEP service temporarily unavailable")

// PKIOperation answers one SCEP message: a signed CertRep with the
// certificate, or a CertRep FAILURE. An error means the message could not
// be read as SCEP at all (the handler answers 400).
func (s *Service) PKIOperation(ctx context.Context, data []byte, remoteIP string) ([]byte, error) {
	msg, err := smallscep.ParsePKIMessage(data)
	if err != nil {
		return nil, fmt.Errorf("parse SCEP message: %w", err)
	}
	got, rerr := s.handle(ctx, msg, data)
	var rep *smallscep.PKIMessage
	if rerr == nil {
		// The reply is built and signed while the certificate's record
		// commits; it leaves only once the record has.
		rep, err = msg.Success(s.ca.Certificate(), s.ca.Signer(), got.cert)
		if rerr = got.wait(); rerr == nil && err != nil {
			return nil, fmt.Errorf("SCEP success reply: %w", err)
		}
	}
	if rerr != nil && rerr.temporary {
		s.log.ErrorContext(ctx, "SCEP request failed on the server's side", "transaction", string(msg.TransactionID),
			"err", rerr.reason, "remote_ip", remoteIP)
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, rerr.reason)
	}
	if rerr != nil {
		s.log.WarnContext(ctx, "SCEP request refused", "transaction", string(msg.TransactionID), "type", msg.MessageType.String(),
			"fail_info", rerr.info.String(), "reason", rerr.reason, "remote_ip", remoteIP)
		ev := enrollment.AuditEvent{At: s.now(), Actor: s.name + ":" + remoteIP, Action: s.name + ".refuse", TargetType: "scep_transaction",
			TargetID: truncate(string(msg.TransactionID), 128), RemoteIP: remoteIP, Outcome: enrollment.OutcomeRefused, Detail: rerr.reason.Error()}
		if err := s.store.AppendAudit(ctx, ev); err != nil {
			s.log.ErrorContext(ctx, "audit of a refused SCEP request failed", "err", err)
		}
		rep, err := msg.Fail(s.ca.Certificate(), s.ca.Signer(), rerr.info)
		if err != nil {
			return nil, fmt.Errorf("SCEP failure reply: %w", err)
		}
		return rep.Raw, nil
	}
	return rep.Raw, nil
}

// issued is a certificate to deliver and, for a new one, the outcome of
// writing its record, which runs beside the reply's RSA signature: the
// reply of an issuance waited for the record's COMMIT (a fifth of an
// issuance's work that is not a private-key operation, by pprof of
// BenchmarkIssuance).
type issued struct {
	cert     *x509.Certificate
	recorded <-chan recordOutcome
}

type recordOutcome struct {
	refusal *refusal
	// panicked is the record goroutine's panic: it is raised again in the
	// request's, where the server recovers it.
	panicked *recordPanic
}

// recordPanic carries the stack where the record panicked: the server
// logs the stack of the goroutine it recovers in, which does not show it.
type recordPanic struct {
	value any
	stack []byte
}

func (p *recordPanic) Error() string {
	return fmt.Sprintf("%v\n\nin the goroutine recording the certificate: %s", p.value, p.stack)
}

// wait returns once the record is written, with its refusal if it was not.
func (i issued) wait() *refusal {
	if i.recorded == nil {
		return nil
	}
	out := <-i.recorded
	if out.panicked != nil {
		panic(out.panicked)
	}
	return out.refusal
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *Service) handle(ctx context.Context, msg *smallscep.PKIMessage, data []byte) (issued, *refusal) {
	switch msg.MessageType {
	case smallscep.PKCSReq, smallscep.RenewalReq:
	default:
		return issued{}, refuse(smallscep.BadRequest, "message type %s is not supported", msg.MessageType)
	}
	// The reply is encrypted to the signer's certificate: check now that it
	// can be, so that no certificate is recorded that cannot be delivered.
	p7, err := pkcs7.Parse(data)
	if err != nil {
		return issued{}, refuse(smallscep.BadMessageCheck, "parse signer: %v", err)
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return issued{}, refuse(smallscep.BadMessageCheck, "no signer certificate")
	}
	if _, ok := signer.PublicKey.(*rsa.PublicKey); !ok {
		return issued{}, refuse(smallscep.BadAlg, "signer key is %T; SCEP replies are encrypted to an RSA key", signer.PublicKey)
	}
	if err := msg.DecryptPKIEnvelope(s.ca.Certificate(), s.ca.Decrypter()); err != nil {
		return issued{}, refuse(smallscep.BadMessageCheck, "decrypt envelope: %v", err)
	}
	csr := msg.CSR
	if err := csr.CheckSignature(); err != nil {
		return issued{}, refuse(smallscep.BadMessageCheck, "CSR signature: %v", err)
	}
	pub, ok := csr.PublicKey.(*rsa.PublicKey)
	if !ok {
		return issued{}, refuse(smallscep.BadAlg, "CSR key is %T, not RSA", csr.PublicKey)
	}
	if pub.N.BitLen() < s.minBits {
		return issued{}, refuse(smallscep.BadAlg, "CSR key has %d bits, under %d", pub.N.BitLen(), s.minBits)
	}
	keyDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return issued{}, refuse(smallscep.BadRequest, "CSR key: %v", err)
	}
	keySum := sha256.Sum256(keyDER)
	keyHash := hex.EncodeToString(keySum[:])
	cn := csr.Subject.CommonName

	// A retry after a lost reply (same transaction, same key) gets the
	// certificate already issued. It is looked for only where a first
	// request would fail, so a first issuance costs no extra query.
	retry := func() (issued, *refusal, bool) {
		prev, err := s.store.IssuedByTransaction(ctx, string(msg.TransactionID), keyHash)
		if errors.Is(err, enrollment.ErrNotFound) {
			return issued{}, nil, false
		}
		if err != nil {
			return issued{}, unavailable("look up transaction: %w", err), true
		}
		if prev.RevokedAt != nil || prev.ReservationID != cn {
			return issued{}, refuse(smallscep.BadRequest, "retry of transaction %s whose certificate is revoked or for another subject", msg.TransactionID), true
		}
		c, err := x509.ParseCertificate(prev.DER)
		if err != nil {
			return issued{}, refuse(smallscep.BadRequest, "stored certificate: %v", err), true
		}
		s.log.InfoContext(ctx, "SCEP retry answered with the certificate already issued", "serial", prev.Serial)
		return issued{cert: c}, nil, true
	}

	if renewal, rerr := s.renewalSigner(ctx, signer); rerr != nil {
		return issued{}, rerr
	} else if renewal != nil {
		if renewal.ReservationID != cn {
			return issued{}, refuse(smallscep.BadRequest, "renewal for CN %q signed by the certificate of reservation %s", cn, renewal.ReservationID)
		}
		if c, rerr, ok := retry(); ok {
			return c, rerr
		}
		return s.issue(ctx, csr, cn, keyHash, string(msg.TransactionID), "", "renewal of "+renewal.Serial)
	}
	if msg.MessageType == smallscep.RenewalReq {
		return issued{}, refuse(smallscep.BadMessageCheck, "RenewalReq not signed by a current certificate")
	}

	if msg.ChallengePassword == "" {
		return issued{}, refuse(smallscep.BadRequest, "no challenge password")
	}
	challengeHash := enrollment.HashChallenge(msg.ChallengePassword)
	resID, err := s.store.OpenReservationForChallenge(ctx, challengeHash, s.now())
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return issued{}, unavailable("look up challenge: %w", err)
	}
	if err != nil {
		if c, rerr, ok := retry(); ok {
			return c, rerr
		}
		return issued{}, refuse(smallscep.BadRequest, "challenge is unknown, used, or its reservation is not open: %v", err)
	}
	if cn != resID {
		return issued{}, refuse(smallscep.BadRequest, "CSR subject CN %q is not the challenge's reservation %s", truncate(cn, 64), resID)
	}
	return s.issue(ctx, csr, resID, keyHash, string(msg.TransactionID), challengeHash, "challenge")
}

// renewalSigner returns the record of the certificate that signed the
// message when it is one of ours (a renewal), nil when the signer is a
// device's self-signed key, and a refusal when it is one of ours but may
// not renew.
func (s *Service) renewalSigner(ctx context.Context, signer *x509.Certificate) (*Certificate, *refusal) {
	// A first enrollment is signed by the device's own self-signed key:
	// the names tell it apart before an RSA verification would.
	ca := s.ca.Certificate()
	if signer == nil || !bytes.Equal(signer.RawIssuer, ca.RawSubject) || signer.CheckSignatureFrom(ca) != nil {
		return nil, nil
	}
	sum := sha256.Sum256(signer.Raw)
	rec, err := s.store.CertificateBySHA256(ctx, hex.EncodeToString(sum[:]))
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return nil, unavailable("look up renewal signer: %w", err)
	}
	if err != nil {
		return nil, refuse(smallscep.BadCertID, "renewal signer is not on record: %v", err)
	}
	now := s.now()
	if rec.RevokedAt != nil || !now.Before(rec.NotAfter) {
		return nil, refuse(smallscep.BadCertID, "renewal signer %s is revoked or expired", rec.Serial)
	}
	// An identity whose key Apple attested in the Secure Enclave renews by
	// re-attestation over ACME only: SCEP would trade it for a key the
	// device can export.
	if rec.HardwareBound {
		return nil, refuse(smallscep.BadRequest, "renewal signer %s is a Secure Enclave identity; it renews over ACME, not SCEP", rec.Serial)
	}
	ok, err := s.store.EnrollmentApproved(ctx, rec.ReservationID)
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return nil, unavailable("renewal: enrollment state: %w", err)
	}
	if err != nil || !ok {
		return nil, refuse(smallscep.BadRequest, "renewal for reservation %s whose enrollment is not approved (%v)", rec.ReservationID, err)
	}
	return &rec, nil
}

func (s *Service) issue(ctx context.Context, csr *x509.CertificateRequest, resID, keyHash, txID, challengeHash, how string) (issued, *refusal) {
	now := s.now()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return issued{}, unavailable("serial: %w", err)
	}
	ca := s.ca.Certificate()
	notAfter := now.Add(s.validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: resID},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if s.decorate != nil {
		if err := s.decorate(ctx, resID, tmpl); err != nil {
			return issued{}, unavailable("certificate contents: %w", err)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, s.ca.Signer())
	if err != nil {
		return issued{}, unavailable("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return issued{}, unavailable("parse issued: %w", err)
	}
	fp := sha256.Sum256(der)
	rec := Certificate{Serial: strings.ToUpper(serial.Text(16)), SHA256: hex.EncodeToString(fp[:]), Subject: cert.Subject.String(),
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, ReservationID: resID, KeySHA256: keyHash, TransactionID: txID, DER: der, IssuedAt: now}
	ev := enrollment.AuditEvent{At: now, Actor: s.name, Action: s.name + ".issue", TargetType: "reservation", TargetID: resID,
		Outcome: enrollment.OutcomeOK, Detail: fmt.Sprintf("serial=%s via=%s", rec.Serial, how)}
	recorded := make(chan recordOutcome, 1)
	go func() {
		var out recordOutcome
		finished := false
		defer func() {
			if p := recover(); p != nil {
				out.panicked = &recordPanic{value: p, stack: debug.Stack()}
			} else if !finished {
				// runtime.Goexit: no outcome, so no certificate leaves.
				out.refusal = unavailable("record: its goroutine ended without an outcome")
			}
			recorded <- out
		}()
		out.refusal = s.record(ctx, rec, challengeHash, now, ev, how)
		finished = true
	}()
	return issued{cert: cert, recorded: recorded}, nil
}

// record stores an issued certificate, consuming its challenge; until it
// has, the certificate is not delivered.
func (s *Service) record(ctx context.Context, rec Certificate, challengeHash string, now time.Time, ev enrollment.AuditEvent, how string) *refusal {
	if err := s.store.RecordIssued(ctx, rec, challengeHash, now, ev); err != nil {
		if errors.Is(err, enrollment.ErrConflict) || errors.Is(err, enrollment.ErrNotFound) {
			return refuse(smallscep.BadRequest, "record: %v", err)
		}
		return unavailable("record: %w", err)
	}
	s.log.InfoContext(ctx, "certificate issued", "reservation", rec.ReservationID, "serial", rec.Serial, "via", how)
	return nil
}

// compile-time check that the standard RSA key satisfies both roles.
var _ interface {
	crypto.Signer
	crypto.Decrypter
} = (*rsa.PrivateKey)(nil)
