package trust

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "crypto/sha1" // OCSP requests name their issuer by SHA-1 hashes unless told otherwise
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// Revoked is one revoked trust certificate.
type Revoked struct {
	Serial    string // upper-case hex
	RevokedAt time.Time
	Code      int // RFC 5280 CRLReason
	NotAfter  time.Time
}

// Status is what the store knows of one trust certificate.
type Status struct {
	Serial    string
	NotAfter  time.Time
	RevokedAt *time.Time
	Code      int
}

// CRL is a signed CRL as stored: every replica serves the latest.
type CRL struct {
	Number     int64
	Generation string
	ThisUpdate time.Time
	DER        []byte
}

// RevocationStore is what revocation needs from storage.
type RevocationStore interface {
	// RevocationGeneration changes whenever a trust certificate is revoked.
	RevocationGeneration(ctx context.Context) (string, error)
	// RevokedTrust lists revoked trust certificates not yet expired at now.
	RevokedTrust(ctx context.Context, now time.Time) ([]Revoked, error)
	// LatestCRL is the last CRL saved, ErrNotFound before the first.
	LatestCRL(ctx context.Context) (CRL, error)
	// SaveCRL stores crl if the latest is still number prev (0: none);
	// otherwise another replica signed first and the error wraps
	// ErrConflict.
	SaveCRL(ctx context.Context, prev int64, crl CRL) error
	// TrustStatus finds a trust certificate by serial, ErrNotFound if it
	// is not one of ours.
	TrustStatus(ctx context.Context, serial string) (Status, error)
}

// Revocation publishes the trust CA's CRL and answers OCSP.
type Revocation struct {
	ca    Authority
	store RevocationStore
	log   *slog.Logger
	now   func() time.Time

	mu sync.Mutex // one signer per replica at a time
}

// NewRevocation returns the CRL publisher and OCSP responder of ca.
func NewRevocation(ca Authority, store RevocationStore, log *slog.Logger, now func() time.Time) *Revocation {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Revocation{ca: ca, store: store, log: log, now: now}
}

// CRL lifetimes: a CRL is re-signed after crlRefresh even when nothing was
// revoked, and relying parties may use one until crlValidity has passed.
const (
	crlRefresh  = 12 * time.Hour
	crlValidity = 26 * time.Hour
)

// CurrentCRL returns a CRL that lists every revocation committed before the
// call, signing a new one when revocations changed or the last one aged.
// It always serves the store's latest, never one held in memory: a
// replica must not hand out a CRL numbered lower than one another replica
// served already. The generation is read before the revocations, so a CRL
// lists at least what its generation counts.
func (r *Revocation) CurrentCRL(ctx context.Context) ([]byte, error) {
	// The common case, a current CRL, needs no lock: only signing does.
	if der, ok, err := r.fresh(ctx); err != nil || ok {
		return der, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for range 5 {
		gen, err := r.store.RevocationGeneration(ctx)
		if err != nil {
			return nil, fmt.Errorf("CRL: %w", err)
		}
		latest, err := r.store.LatestCRL(ctx)
		if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
			return nil, fmt.Errorf("CRL: %w", err)
		}
		now := r.now()
		if latest.DER != nil && latest.Generation == gen && now.Sub(latest.ThisUpdate) < crlRefresh {
			return latest.DER, nil
		}
		next, err := r.sign(ctx, latest.Number+1, gen, now)
		if err != nil {
			return nil, err
		}
		err = r.store.SaveCRL(ctx, latest.Number, next)
		if errors.Is(err, enrollment.ErrConflict) {
			continue // another replica signed: read it
		}
		if err != nil {
			return nil, fmt.Errorf("CRL: %w", err)
		}
		r.log.InfoContext(ctx, "trust CRL signed", "number", next.Number)
		return next.DER, nil
	}
	return nil, errors.New("CRL: other replicas keep signing; try again")
}

// fresh returns the stored CRL when it is current.
func (r *Revocation) fresh(ctx context.Context) ([]byte, bool, error) {
	gen, err := r.store.RevocationGeneration(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("CRL: %w", err)
	}
	latest, err := r.store.LatestCRL(ctx)
	if errors.Is(err, enrollment.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("CRL: %w", err)
	}
	return latest.DER, latest.Generation == gen && r.now().Sub(latest.ThisUpdate) < crlRefresh, nil
}

func (r *Revocation) sign(ctx context.Context, number int64, gen string, now time.Time) (CRL, error) {
	revoked, err := r.store.RevokedTrust(ctx, now)
	if err != nil {
		return CRL{}, fmt.Errorf("CRL: %w", err)
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, rv := range revoked {
		serial, ok := new(big.Int).SetString(rv.Serial, 16)
		if !ok {
			return CRL{}, fmt.Errorf("CRL: stored serial %q is not hex", rv.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: rv.RevokedAt, ReasonCode: rv.Code})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(crlValidity),
		RevokedCertificateEntries: entries,
	}, r.ca.Certificate(), r.ca.Signer())
	if err != nil {
		return CRL{}, fmt.Errorf("sign CRL: %w", err)
	}
	return CRL{Number: number, Generation: gen, ThisUpdate: now, DER: der}, nil
}

// Keep re-signs the CRL when revocations change, checking every interval,
// so that it never ages past a day even when nobody fetches it. It returns
// when ctx ends.
func (r *Revocation) Keep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := r.CurrentCRL(ctx); err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "keeping the trust CRL current failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxOCSPRequest bounds an OCSP request body; real ones are ~100 bytes.
const maxOCSPRequest = 4 << 10

// Routes mounts the CA certificate, the CRL and the OCSP responder. They
// are public: relying parties fetch them without credentials.
func (r *Revocation) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+CACertPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/pkix-cert")
		_, _ = w.Write(r.ca.Certificate().Raw)
	})
	mux.HandleFunc("GET /trust/ca.pem", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_ = pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: r.ca.Certificate().Raw})
	})
	mux.HandleFunc("GET "+CRLPath, func(w http.ResponseWriter, req *http.Request) {
		der, err := r.CurrentCRL(req.Context())
		r.answer(w, req, "CRL", "application/pkix-crl", der, err)
	})
	mux.HandleFunc("POST "+OCSPPath, func(w http.ResponseWriter, req *http.Request) {
		if ct := req.Header.Get("Content-Type"); ct != "" && !strings.EqualFold(ct, "application/ocsp-request") {
			http.Error(w, "Content-Type must be application/ocsp-request", http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, maxOCSPRequest+1))
		if err != nil || len(body) > maxOCSPRequest {
			http.Error(w, "OCSP request too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		r.ocsp(w, req, body)
	})
	mux.HandleFunc("GET "+OCSPPath+"/{request...}", func(w http.ResponseWriter, req *http.Request) {
		enc := req.PathValue("request")
		if len(enc) > maxOCSPRequest*2 {
			http.Error(w, "OCSP request too large", http.StatusRequestURITooLong)
			return
		}
		body, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			http.Error(w, "OCSP GET request must be base64 DER", http.StatusBadRequest)
			return
		}
		r.ocsp(w, req, body)
	})
}

func (r *Revocation) ocsp(w http.ResponseWriter, req *http.Request, body []byte) {
	resp, err := r.Respond(req.Context(), body)
	r.answer(w, req, "OCSP", "application/ocsp-response", resp, err)
}

// answer writes a signed revocation answer, or tells the relying party to
// come back when the server failed to make one. Relying parties may cache
// either answer for 30 s.
func (r *Revocation) answer(w http.ResponseWriter, req *http.Request, what, contentType string, der []byte, err error) {
	if err != nil {
		r.log.ErrorContext(req.Context(), "revocation answer failed", "what", what, "err", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, what+" temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "max-age=30")
	_, _ = w.Write(der)
}

// ocspValidity is how long a relying party may cache an OCSP answer:
// short, so that a cached "good" outlives a revocation by minutes at most.
const ocspValidity = 5 * time.Minute

// Respond answers one DER OCSP request: good, revoked or unknown, signed
// by the trust CA; requests about another CA's certificates, or that do
// not parse, get the protocol's error answers. An error is the server's
// own failure.
func (r *Revocation) Respond(ctx context.Context, der []byte) ([]byte, error) {
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	if !r.issuedByUs(req) {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	now := r.now()
	tmpl := ocsp.Response{SerialNumber: req.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(ocspValidity),
		Status: ocsp.Unknown, IssuerHash: req.HashAlgorithm}
	st, err := r.store.TrustStatus(ctx, strings.ToUpper(req.SerialNumber.Text(16)))
	switch {
	case errors.Is(err, enrollment.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("OCSP: %w", err)
	case st.RevokedAt != nil:
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, *st.RevokedAt, st.Code
	default:
		tmpl.Status = ocsp.Good
	}
	resp, err := ocsp.CreateResponse(r.ca.Certificate(), r.ca.Certificate(), tmpl, r.ca.Signer())
	if err != nil {
		return nil, fmt.Errorf("sign OCSP response: %w", err)
	}
	return resp, nil
}

// issuedByUs checks the request's issuer name and key hashes against the
// trust CA.
func (r *Revocation) issuedByUs(req *ocsp.Request) bool {
	if !req.HashAlgorithm.Available() {
		return false
	}
	ca := r.ca.Certificate()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(ca.RawSubjectPublicKeyInfo, &spki); err != nil {
		return false
	}
	h := req.HashAlgorithm.New()
	h.Write(ca.RawSubject)
	nameHash := h.Sum(nil)
	h.Reset()
	h.Write(spki.PublicKey.RightAlign())
	keyHash := h.Sum(nil)
	return bytes.Equal(nameHash, req.IssuerNameHash) && bytes.Equal(keyHash, req.IssuerKeyHash)
}
