package scep

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/vestibule-mdm/vestibule/internal/clientaddr"
)

// MaxMessage bounds a PKIOperation: a CSR for a 4096-bit key in its
// envelope and signature is well under 16 KiB.
const MaxMessage = 64 << 10

// caps are what GetCACaps advertises (RFC 8894 §3.5.2).
const caps = "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\n"

// Routes mounts /scep.
func (s *Service) Routes(mux *http.ServeMux) { s.RoutesAt(mux, "/scep") }

// RoutesAt mounts the service at path: each CA has its own.
func (s *Service) RoutesAt(mux *http.ServeMux, path string) {
	mux.HandleFunc("GET "+path, s.serveHTTP)
	mux.HandleFunc("POST "+path, s.serveHTTP)
}

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	op := r.URL.Query().Get("operation")
	switch {
	case op == "GetCACaps" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, caps)
	case op == "GetCACert" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/x-x509-ca-cert")
		_, _ = w.Write(s.ca.Certificate().Raw)
	case op == "PKIOperation":
		s.pkiOperation(w, r)
	default:
		http.Error(w, "unknown SCEP operation", http.StatusBadRequest)
	}
}

func (s *Service) pkiOperation(w http.ResponseWriter, r *http.Request) {
	var data []byte
	var err error
	if r.Method == http.MethodPost {
		if r.ContentLength > MaxMessage {
			http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
			return
		}
		data, err = io.ReadAll(io.LimitReader(r.Body, MaxMessage+1))
		if err == nil && len(data) > MaxMessage {
			http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
			return
		}
	} else {
		msg := r.URL.Query().Get("message")
		if len(msg) > MaxMessage*4/3+4 {
			http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
			return
		}
		// Clients differ on URL-escaping '+' in GET messages: a space here
		// was a '+' there.
		data, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(msg, " ", "+"))
	}
	if err != nil || len(data) == 0 {
		http.Error(w, "unreadable SCEP message", http.StatusBadRequest)
		return
	}
	rep, err := s.PKIOperation(r.Context(), data, clientIP(r))
	if errors.Is(err, ErrUnavailable) {
		// Logged as a server error by PKIOperation; the device retries.
		w.Header().Set("Retry-After", "30")
		http.Error(w, "SCEP service temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		s.log.WarnContext(r.Context(), "SCEP message rejected", "err", err, "remote_ip", clientIP(r))
		http.Error(w, "malformed SCEP message", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/x-pki-message")
	_, _ = w.Write(rep)
}

// clientIP is the device's address, through trusted proxies.
func clientIP(r *http.Request) string { return clientaddr.Of(r) }
