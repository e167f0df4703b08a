package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/vestibule-mdm/vestibule/attest"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// Statuses of orders and challenges (RFC 8555 §7.1.6).
const (
	StatusPending    = "pending"
	StatusReady      = "ready"
	StatusProcessing = "processing"
	StatusValid      = "valid"
	StatusInvalid    = "invalid"
)

// Account is an ACME account: a key.
type Account struct {
	ID         string
	Thumbprint string
	JWK        string
	Status     string
	CreatedAt  time.Time
}

// Order is an order for one permanent-identifier; its authorization and
// challenge share its ID.
type Order struct {
	ID            string
	AccountID     string
	ReservationID string
	ClientHash    string
	// Renewal: an approved device renewing its identity with the
	// ClientIdentifier it enrolled with.
	Renewal         bool
	Status          string
	ExpiresAt       time.Time
	Token           string
	ChallengeStatus string
	Error           string
	AttestedSerial  string
	AttestedUDID    string
	AttestedKey     []byte // DER SubjectPublicKeyInfo
	ValidatedAt     *time.Time
	CertSerial      string
	CreatedAt       time.Time
}

// Certificate is an identity certificate issued over ACME.
type Certificate struct {
	Serial         string
	SHA256         string
	Subject        string
	NotBefore      time.Time
	NotAfter       time.Time
	ReservationID  string
	KeySHA256      string
	OrderID        string
	DER            []byte
	IssuedAt       time.Time
	AttestedSerial string
	AttestedUDID   string
}

// Store is what the ACME server needs from storage.
type Store interface {
	AddNonce(ctx context.Context, nonce string, expires time.Time) error
	// UseNonce consumes a nonce: true once, false ever after or when unknown.
	UseNonce(ctx context.Context, nonce string, now time.Time) (bool, error)
	// CreateAccount stores a new account, or returns the one with the same
	// key (created false).
	CreateAccount(ctx context.Context, a Account) (acct Account, created bool, err error)
	AccountByThumbprint(ctx context.Context, thumbprint string) (Account, error)
	Account(ctx context.Context, id string) (Account, error)
	// ACMEReservation returns the reservation of an ACME profile whose
	// ClientIdentifier has this hash: open, unexpired and unused (a first
	// enrollment), or used by an enrollment that is approved and whose
	// owner is enabled (renewal true). Otherwise ErrNotFound.
	ACMEReservation(ctx context.Context, clientHash string, now time.Time) (resID string, renewal bool, err error)
	CreateOrder(ctx context.Context, o Order, ev enrollment.AuditEvent) error
	Order(ctx context.Context, id string) (Order, error)
	// ValidateChallenge records the challenge's outcome if it is still
	// pending (else ErrConflict).
	ValidateChallenge(ctx context.Context, o Order, ev enrollment.AuditEvent) error
	// RecordACMEIssued stores the certificate, consumes the
	// ClientIdentifier and makes the order valid, in one transaction; a
	// ClientIdentifier used meanwhile is ErrConflict and changes nothing.
	RecordACMEIssued(ctx context.Context, orderID string, c Certificate, clientHash string, now time.Time, ev enrollment.AuditEvent) error
	// RecordACMERenewal stores a renewed certificate and makes the order
	// valid, while the enrollment is approved, its owner enabled, and the
	// attested serial the one its identity was attested with; otherwise
	// ErrConflict and nothing changes.
	RecordACMERenewal(ctx context.Context, orderID string, c Certificate, now time.Time, ev enrollment.AuditEvent) error
	// FailOrder makes a pending or ready order invalid.
	FailOrder(ctx context.Context, id, reason string, ev enrollment.AuditEvent) error
	CertificateDER(ctx context.Context, serial string) ([]byte, error)
}

// Authority signs the identity certificates (the SCEP CA: one identity CA
// for both protocols).
type Authority interface {
	Certificate() *x509.Certificate
	Signer() crypto.Signer
}

// Verifier checks an Apple attestation chain against the pinned root.
type Verifier interface {
	Verify(chain [][]byte, nonce []byte) (attest.Result, error)
}

// Audit records refusals (aggregated by the caller).
type Audit interface {
	AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error
}

// Options configure the Server.
type Options struct {
	Store     Store
	Authority Authority
	Verifier  Verifier
	Audit     Audit
	// BaseURL is the server's public URL; the ACME URLs are under /acme.
	BaseURL  string
	Validity time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
}

// Server answers ACME requests.
type Server struct {
	o Options
}

// Lifetimes.
const (
	nonceTTL = 10 * time.Minute
	orderTTL = time.Hour
)

// Prefix is where the ACME server lives.
const Prefix = "/acme"

// New returns the ACME server.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Authority == nil || o.Verifier == nil || o.Audit == nil || o.BaseURL == "" || o.Validity < time.Hour {
		return nil, errors.New("acme: Store, Authority, Verifier, Audit, BaseURL and a Validity of at least 1h are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{o: o}, nil
}

func (s *Server) url(path string) string { return s.o.BaseURL + Prefix + path }

// DirectoryURL is what the profile's ACME payload names.
func (s *Server) DirectoryURL() string { return s.url("/directory") }

// Routes mounts the ACME endpoints.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Prefix+"/directory", s.directory)
	mux.HandleFunc("HEAD "+Prefix+"/new-nonce", s.newNonce)
	mux.HandleFunc("GET "+Prefix+"/new-nonce", s.newNonce)
	mux.HandleFunc("POST "+Prefix+"/new-account", s.post(s.newAccount, true))
	mux.HandleFunc("POST "+Prefix+"/new-order", s.post(s.newOrder, false))
	mux.HandleFunc("POST "+Prefix+"/account/{id}", s.post(s.account, false))
	mux.HandleFunc("POST "+Prefix+"/order/{id}", s.post(s.order, false))
	mux.HandleFunc("POST "+Prefix+"/authz/{id}", s.post(s.authz, false))
	mux.HandleFunc("POST "+Prefix+"/chall/{id}", s.post(s.challenge, false))
	mux.HandleFunc("POST "+Prefix+"/order/{id}/finalize", s.post(s.finalize, false))
	mux.HandleFunc("POST "+Prefix+"/cert/{id}", s.post(s.certificate, false))
}

// problem is an RFC 7807 error with an ACME type.
type problem struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
	Status int    `json:"status"`
	// audited: the handler recorded the refusal already.
	audited bool
}

func (p *problem) Error() string { return p.Type + ": " + p.Detail }

func acmeErr(status int, typ, format string, args ...any) *problem {
	return &problem{Type: "urn:ietf:params:acme:error:" + typ, Detail: fmt.Sprintf(format, args...), Status: status}
}

func (s *Server) directory(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"newNonce":   s.url("/new-nonce"),
		"newAccount": s.url("/new-account"),
		"newOrder":   s.url("/new-order"),
		"meta":       map[string]any{"externalAccountRequired": false},
	})
}

func (s *Server) newNonce(w http.ResponseWriter, r *http.Request) {
	if !s.nonceHeader(w, r) {
		writeProblem(w, acmeErr(http.StatusServiceUnavailable, "serverInternal", "no nonce could be made"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodGet {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// nonceHeader adds a fresh Replay-Nonce and the directory link.
func (s *Server) nonceHeader(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Set("Link", "<"+s.DirectoryURL()+`>;rel="index"`)
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return false
	}
	nonce := base64.RawURLEncoding.EncodeToString(b)
	if err := s.o.Store.AddNonce(r.Context(), nonce, s.o.Now().Add(nonceTTL)); err != nil {
		s.o.Logger.ErrorContext(r.Context(), "ACME nonce", "err", err)
		return false
	}
	w.Header().Set("Replay-Nonce", nonce)
	return true
}

// request is a verified POST.
type request struct {
	signed
	Account Account
	r       *http.Request
}

type handler func(ctx context.Context, req request) (status int, body any, header http.Header, err error)

// post verifies the JWS of a POST: the nonce is fresh and used once, the
// URL is this request's, the key is the account's (kid) or, for
// newAccount only, a new one (jwk).
func (s *Server) post(h handler, newAccount bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		s.nonceHeader(w, r)
		if ct := r.Header.Get("Content-Type"); !strings.EqualFold(ct, "application/jose+json") {
			s.reject(w, r, "", acmeErr(http.StatusUnsupportedMediaType, "malformed", "Content-Type must be application/jose+json"))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
		if err != nil || len(body) > maxRequest {
			s.reject(w, r, "", acmeErr(http.StatusRequestEntityTooLarge, "malformed", "request over %d bytes", maxRequest))
			return
		}
		jws, sg, err := parseJWS(body)
		if err != nil {
			s.reject(w, r, "", acmeErr(http.StatusBadRequest, "malformed", "%v", err))
			return
		}
		if sg.URL != s.o.BaseURL+r.URL.Path {
			s.reject(w, r, "", acmeErr(http.StatusUnauthorized, "unauthorized", "the signed url is not this request's"))
			return
		}
		ok, err := s.o.Store.UseNonce(ctx, sg.Nonce, s.o.Now())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !ok {
			s.reject(w, r, "", acmeErr(http.StatusBadRequest, "badNonce", "the nonce is unknown, used or expired"))
			return
		}
		req := request{signed: sg, r: r}
		key := sg.JWK
		switch {
		case newAccount && sg.JWK == nil:
			s.reject(w, r, "", acmeErr(http.StatusBadRequest, "malformed", "newAccount is signed with its jwk"))
			return
		case !newAccount && sg.JWK != nil:
			s.reject(w, r, "", acmeErr(http.StatusBadRequest, "malformed", "sign with the account URL (kid), not a jwk"))
			return
		case !newAccount:
			id, found := strings.CutPrefix(sg.KeyID, s.url("/account/"))
			var acct Account
			if found && enrollment.ValidID(id) {
				acct, err = s.o.Store.Account(ctx, id)
			} else {
				err = enrollment.ErrNotFound
			}
			if errors.Is(err, enrollment.ErrNotFound) {
				s.reject(w, r, "", acmeErr(http.StatusBadRequest, "accountDoesNotExist", "no such account"))
				return
			}
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if acct.Status != StatusValid {
				s.reject(w, r, "", acmeErr(http.StatusUnauthorized, "unauthorized", "the account is %s", acct.Status))
				return
			}
			key = new(jose.JSONWebKey)
			if err := key.UnmarshalJSON([]byte(acct.JWK)); err != nil {
				s.fail(w, r, fmt.Errorf("stored account key: %w", err))
				return
			}
			req.Account = acct
		}
		if req.Payload, err = verify(jws, key); err != nil {
			s.reject(w, r, req.Account.ID, acmeErr(http.StatusUnauthorized, "unauthorized", "%v", err))
			return
		}
		status, out, header, err := h(ctx, req)
		if err != nil {
			var p *problem
			if errors.As(err, &p) {
				s.reject(w, r, req.Account.ID, p)
				return
			}
			s.fail(w, r, err)
			return
		}
		for k, v := range header {
			w.Header()[k] = v
		}
		if b, ok := out.([]byte); ok {
			w.WriteHeader(status)
			_, _ = w.Write(b)
			return
		}
		writeJSON(w, status, out)
	}
}

// reject answers a refused request with its problem, and logs and audits
// it (through the caller's aggregator, so a flood stays bounded) unless
// the handler did already.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, account string, p *problem) {
	if !p.audited {
		ip := clientIP(r)
		s.o.Logger.WarnContext(r.Context(), "ACME request refused", "path", r.URL.Path, "type", p.Type, "reason", p.Detail,
			"account", account, "remote_ip", ip)
		ev := enrollment.AuditEvent{At: s.o.Now(), Actor: "acme:" + account, Action: "acme.refuse", TargetType: "acme_request",
			TargetID: r.URL.Path, RemoteIP: ip, Outcome: enrollment.OutcomeRefused,
			Detail: strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:") + ": " + p.Detail}
		if err := s.o.Audit.AppendAudit(r.Context(), ev); err != nil {
			s.o.Logger.ErrorContext(r.Context(), "audit of a refused ACME request failed", "err", err)
		}
	}
	writeProblem(w, p)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.o.Logger.ErrorContext(r.Context(), "ACME request failed", "path", r.URL.Path, "err", err)
	writeProblem(w, acmeErr(http.StatusInternalServerError, "serverInternal", "the request failed on the server's side"))
}

func (s *Server) accountJSON(a Account) map[string]any {
	return map[string]any{"status": a.Status, "orders": s.url("/account/" + a.ID + "/orders")}
}

func (s *Server) newAccount(ctx context.Context, req request) (int, any, http.Header, error) {
	var in struct {
		OnlyReturnExisting bool `json:"onlyReturnExisting"`
		TermsAgreed        bool `json:"termsOfServiceAgreed"`
	}
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &in); err != nil {
			return 0, nil, nil, acmeErr(http.StatusBadRequest, "malformed", "payload: %v", err)
		}
	}
	tp, err := thumbprint(req.JWK)
	if err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "badPublicKey", "%v", err)
	}
	if in.OnlyReturnExisting {
		a, err := s.o.Store.AccountByThumbprint(ctx, tp)
		if errors.Is(err, enrollment.ErrNotFound) {
			return 0, nil, nil, acmeErr(http.StatusBadRequest, "accountDoesNotExist", "no account has this key")
		}
		if err != nil {
			return 0, nil, nil, err
		}
		return http.StatusOK, s.accountJSON(a), http.Header{"Location": {s.url("/account/" + a.ID)}}, nil
	}
	jwk, err := req.JWK.MarshalJSON()
	if err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "badPublicKey", "%v", err)
	}
	a, created, err := s.o.Store.CreateAccount(ctx, Account{ID: enrollment.NewID(), Thumbprint: tp, JWK: string(jwk), Status: StatusValid,
		CreatedAt: s.o.Now()})
	if err != nil {
		return 0, nil, nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return status, s.accountJSON(a), http.Header{"Location": {s.url("/account/" + a.ID)}}, nil
}

func (s *Server) account(_ context.Context, req request) (int, any, http.Header, error) {
	if req.r.PathValue("id") != req.Account.ID {
		return 0, nil, nil, acmeErr(http.StatusUnauthorized, "unauthorized", "not your account")
	}
	return http.StatusOK, s.accountJSON(req.Account), nil, nil
}

// identifier is an order's identifier.
type identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func (s *Server) newOrder(ctx context.Context, req request) (int, any, http.Header, error) {
	var in struct {
		Identifiers []identifier `json:"identifiers"`
	}
	if err := decodePayload(req.Payload, &in); err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "malformed", "%v", err)
	}
	if len(in.Identifiers) != 1 || in.Identifiers[0].Type != "permanent-identifier" {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "unsupportedIdentifier",
			"an order names exactly one permanent-identifier: the profile's ClientIdentifier")
	}
	client := in.Identifiers[0].Value
	if client == "" || len(client) > 256 {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "rejectedIdentifier", "the identifier is empty or too long")
	}
	now := s.o.Now()
	hash := enrollment.HashChallenge(client)
	resID, renewal, err := s.o.Store.ACMEReservation(ctx, hash, now)
	if errors.Is(err, enrollment.ErrNotFound) {
		return 0, nil, nil, acmeErr(http.StatusForbidden, "rejectedIdentifier",
			"the identifier is not the ClientIdentifier of an open ACME reservation, nor of an approved enrollment renewing")
	}
	if err != nil {
		return 0, nil, nil, err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return 0, nil, nil, err
	}
	o := Order{ID: enrollment.NewID(), AccountID: req.Account.ID, ReservationID: resID, ClientHash: hash, Renewal: renewal, Status: StatusPending,
		ExpiresAt: now.Add(orderTTL), Token: base64.RawURLEncoding.EncodeToString(b), ChallengeStatus: StatusPending, CreatedAt: now}
	ev := enrollment.AuditEvent{At: now, Actor: "acme:" + req.Account.ID, Action: "acme.order", TargetType: "reservation", TargetID: resID,
		RemoteIP: clientIP(req.r), Outcome: enrollment.OutcomeOK, Detail: map[bool]string{true: "renewal order ", false: "order "}[renewal] + o.ID}
	if err := s.o.Store.CreateOrder(ctx, o, ev); err != nil {
		return 0, nil, nil, err
	}
	return http.StatusCreated, s.orderJSON(o), http.Header{"Location": {s.url("/order/" + o.ID)}}, nil
}

// ownOrder loads an order of the request's account; another account's is
// as unknown as a missing one.
func (s *Server) ownOrder(ctx context.Context, req request) (Order, error) {
	id := req.r.PathValue("id")
	if !enrollment.ValidID(id) {
		return Order{}, acmeErr(http.StatusNotFound, "malformed", "no such order")
	}
	o, err := s.o.Store.Order(ctx, id)
	if errors.Is(err, enrollment.ErrNotFound) || (err == nil && o.AccountID != req.Account.ID) {
		return Order{}, acmeErr(http.StatusNotFound, "malformed", "no such order")
	}
	if err != nil {
		return Order{}, err
	}
	if o.Status != StatusValid && o.Status != StatusInvalid && !s.o.Now().Before(o.ExpiresAt) {
		o.Status, o.Error = StatusInvalid, "expired"
		if o.ChallengeStatus == StatusPending {
			o.ChallengeStatus = StatusInvalid
		}
	}
	return o, nil
}

func (s *Server) orderJSON(o Order) map[string]any {
	out := map[string]any{
		"status":         o.Status,
		"expires":        o.ExpiresAt.UTC().Format(time.RFC3339),
		"identifiers":    []identifier{{Type: "permanent-identifier", Value: "(ClientIdentifier)"}},
		"authorizations": []string{s.url("/authz/" + o.ID)},
		"finalize":       s.url("/order/" + o.ID + "/finalize"),
	}
	if o.CertSerial != "" {
		out["certificate"] = s.url("/cert/" + o.ID)
	}
	if o.Error != "" {
		out["error"] = acmeErr(http.StatusForbidden, "unauthorized", "%s", o.Error)
	}
	return out
}

func (s *Server) order(ctx context.Context, req request) (int, any, http.Header, error) {
	o, err := s.ownOrder(ctx, req)
	if err != nil {
		return 0, nil, nil, err
	}
	return http.StatusOK, s.orderJSON(o), nil, nil
}

func (s *Server) challengeJSON(o Order) map[string]any {
	c := map[string]any{"type": "device-attest-01", "url": s.url("/chall/" + o.ID), "status": o.ChallengeStatus, "token": o.Token}
	if o.ValidatedAt != nil {
		c["validated"] = o.ValidatedAt.UTC().Format(time.RFC3339)
	}
	if o.ChallengeStatus == StatusInvalid && o.Error != "" {
		c["error"] = acmeErr(http.StatusForbidden, "badAttestationStatement", "%s", o.Error)
	}
	return c
}

func (s *Server) authz(ctx context.Context, req request) (int, any, http.Header, error) {
	o, err := s.ownOrder(ctx, req)
	if err != nil {
		return 0, nil, nil, err
	}
	status := o.ChallengeStatus
	return http.StatusOK, map[string]any{
		"status":     status,
		"expires":    o.ExpiresAt.UTC().Format(time.RFC3339),
		"identifier": identifier{Type: "permanent-identifier", Value: "(ClientIdentifier)"},
		"challenges": []any{s.challengeJSON(o)},
	}, nil, nil
}

// challenge checks the device-attest-01 answer: an Apple attestation of a
// hardware key, fresh for this challenge's token.
func (s *Server) challenge(ctx context.Context, req request) (int, any, http.Header, error) {
	o, err := s.ownOrder(ctx, req)
	if err != nil {
		return 0, nil, nil, err
	}
	up := http.Header{"Link": {"<" + s.url("/authz/"+o.ID) + `>;rel="up"`}}
	if len(req.Payload) == 0 || o.ChallengeStatus != StatusPending || o.Status != StatusPending {
		// POST-as-GET reads the challenge (RFC 8555 §7.5.1: only a payload
		// answers it); one answered already keeps its outcome.
		return http.StatusOK, s.challengeJSON(o), up, nil
	}
	var in struct {
		AttObj string `json:"attObj"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(req.Payload, &in); err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "malformed", "payload: %v", err)
	}
	now := s.o.Now()
	res, why := s.attestation(in.AttObj, in.Error, o.Token)
	o.ValidatedAt = &now
	ev := enrollment.AuditEvent{At: now, Actor: "acme:" + req.Account.ID, Action: "acme.attest", TargetType: "reservation",
		TargetID: o.ReservationID, RemoteIP: clientIP(req.r)}
	if why != "" {
		o.ChallengeStatus, o.Status, o.Error = StatusInvalid, StatusInvalid, why
		ev.Outcome, ev.Detail = enrollment.OutcomeRefused, "order "+o.ID+": "+why
		s.o.Logger.WarnContext(ctx, "ACME device attestation refused", "order", o.ID, "reservation", o.ReservationID, "reason", why,
			"remote_ip", ev.RemoteIP)
	} else {
		o.ChallengeStatus, o.Status = StatusValid, StatusReady
		o.AttestedSerial, o.AttestedUDID, o.AttestedKey = res.Serial, res.UDID, res.LeafKey
		ev.Outcome, ev.Detail = enrollment.OutcomeOK, fmt.Sprintf("order %s: key in Secure Enclave, attested serial=%s udid=%s", o.ID, res.Serial, res.UDID)
	}
	err = s.o.Store.ValidateChallenge(ctx, o, ev)
	if errors.Is(err, enrollment.ErrConflict) {
		if o, err = s.ownOrder(ctx, req); err != nil {
			return 0, nil, nil, err
		}
	} else if err != nil {
		return 0, nil, nil, err
	}
	return http.StatusOK, s.challengeJSON(o), up, nil
}

// attestation verifies an answer and says why it is refused, if it is.
func (s *Server) attestation(attObj, deviceError, token string) (attest.Result, string) {
	if deviceError != "" {
		return attest.Result{}, "the device reported an error instead of an attestation: " + printable(cut(deviceError, 200))
	}
	chain, err := decodeAttestation(attObj)
	if err != nil {
		return attest.Result{}, err.Error()
	}
	res, err := s.o.Verifier.Verify(chain, []byte(token))
	if err != nil {
		return attest.Result{}, "attestation: " + err.Error()
	}
	if !res.Fresh {
		return attest.Result{}, "attestation is not fresh: its freshness code is not SHA-256 of this challenge's token"
	}
	pub, err := x509.ParsePKIXPublicKey(res.LeafKey)
	if err != nil {
		return attest.Result{}, "attested key: " + err.Error()
	}
	if k, ok := pub.(*ecdsa.PublicKey); !ok || (k.Curve != elliptic.P256() && k.Curve != elliptic.P384()) {
		return attest.Result{}, "the attested key is not a P-256 or P-384 key of the Secure Enclave"
	}
	return res, ""
}

func (s *Server) finalize(ctx context.Context, req request) (int, any, http.Header, error) {
	o, err := s.ownOrder(ctx, req)
	if err != nil {
		return 0, nil, nil, err
	}
	if o.Status != StatusReady {
		return 0, nil, nil, acmeErr(http.StatusForbidden, "orderNotReady", "the order is %s", o.Status)
	}
	var in struct {
		CSR string `json:"csr"`
	}
	if err := decodePayload(req.Payload, &in); err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "malformed", "%v", err)
	}
	der, err := base64.RawURLEncoding.DecodeString(in.CSR)
	if err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "badCSR", "csr is not base64url")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return 0, nil, nil, acmeErr(http.StatusBadRequest, "badCSR", "%v", err)
	}
	now := s.o.Now()
	ev := enrollment.AuditEvent{At: now, Actor: "acme:" + req.Account.ID, Action: "acme.issue", TargetType: "reservation",
		TargetID: o.ReservationID, RemoteIP: clientIP(req.r)}
	if !bytes.Equal(csr.RawSubjectPublicKeyInfo, o.AttestedKey) {
		why := "the CSR's key is not the key Apple attested"
		ev.Outcome, ev.Detail = enrollment.OutcomeRefused, "order "+o.ID+": "+why
		s.o.Logger.WarnContext(ctx, "ACME finalize refused", "order", o.ID, "reservation", o.ReservationID, "reason", why)
		if err := s.o.Store.FailOrder(ctx, o.ID, why, ev); err != nil {
			return 0, nil, nil, err
		}
		p := acmeErr(http.StatusBadRequest, "badCSR", "%s", why)
		p.audited = true
		return 0, nil, nil, p
	}
	cert, err := s.issue(csr, o, now)
	if err != nil {
		return 0, nil, nil, err
	}
	ev.Outcome = enrollment.OutcomeOK
	ev.Detail = fmt.Sprintf("serial=%s via=acme order=%s hardware_bound attested_serial=%s", cert.Serial, o.ID, o.AttestedSerial)
	why := "the ClientIdentifier was used meanwhile, or its reservation is no longer open"
	if o.Renewal {
		ev.Action, ev.Detail = "acme.renew", ev.Detail+" renewal"
		why = "renewal refused: the enrollment is not approved, its owner is disabled, or Apple attested another device"
		err = s.o.Store.RecordACMERenewal(ctx, o.ID, cert, now, ev)
	} else {
		err = s.o.Store.RecordACMEIssued(ctx, o.ID, cert, o.ClientHash, now, ev)
	}
	if errors.Is(err, enrollment.ErrConflict) {
		ev.Outcome, ev.Detail = enrollment.OutcomeRefused, "order "+o.ID+": "+why
		s.o.Logger.WarnContext(ctx, "ACME finalize refused", "order", o.ID, "reservation", o.ReservationID, "reason", why)
		if err := s.o.Store.FailOrder(ctx, o.ID, why, ev); err != nil {
			return 0, nil, nil, err
		}
		p := acmeErr(http.StatusForbidden, "unauthorized", "%s", why)
		p.audited = true
		return 0, nil, nil, p
	}
	if err != nil {
		return 0, nil, nil, err
	}
	s.o.Logger.InfoContext(ctx, "identity certificate issued over ACME", "reservation", o.ReservationID, "serial", cert.Serial)
	o.Status, o.CertSerial = StatusValid, cert.Serial
	return http.StatusOK, s.orderJSON(o), http.Header{"Location": {s.url("/order/" + o.ID)}}, nil
}

// issue signs the identity certificate for the CSR's (attested) key.
func (s *Server) issue(csr *x509.CertificateRequest, o Order, now time.Time) (Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return Certificate{}, err
	}
	ca := s.o.Authority.Certificate()
	notAfter := now.Add(s.o.Validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: o.ReservationID}, NotBefore: now.Add(-5 * time.Minute),
		NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, s.o.Authority.Signer())
	if err != nil {
		return Certificate{}, fmt.Errorf("sign: %w", err)
	}
	fp, key := sha256.Sum256(der), sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return Certificate{Serial: strings.ToUpper(serial.Text(16)), SHA256: hex.EncodeToString(fp[:]), Subject: tmpl.Subject.String(),
		NotBefore: tmpl.NotBefore, NotAfter: notAfter, ReservationID: o.ReservationID, KeySHA256: hex.EncodeToString(key[:]), OrderID: o.ID,
		DER: der, IssuedAt: now, AttestedSerial: o.AttestedSerial, AttestedUDID: o.AttestedUDID}, nil
}

func (s *Server) certificate(ctx context.Context, req request) (int, any, http.Header, error) {
	o, err := s.ownOrder(ctx, req)
	if err != nil {
		return 0, nil, nil, err
	}
	if o.CertSerial == "" {
		return 0, nil, nil, acmeErr(http.StatusNotFound, "malformed", "the order has no certificate")
	}
	der, err := s.o.Store.CertificateDER(ctx, o.CertSerial)
	if err != nil {
		return 0, nil, nil, err
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: s.o.Authority.Certificate().Raw})
	return http.StatusOK, b.Bytes(), http.Header{"Content-Type": {"application/pem-certificate-chain"}}, nil
}

// printable keeps what a device wrote readable and inert: no control
// characters, valid UTF-8.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\ufffd"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, p *problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
