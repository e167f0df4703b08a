// Package apnstest is an HTTP/2 server that takes pushes as APNs does and
// records them, and the push certificate a server presents to it, for
// benchmarks and tools that run a whole server with push on.
package apnstest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Server records every push by device token.
type Server struct {
	*httptest.Server
	mu     sync.Mutex
	pushes map[string][]time.Time
	onPush func(token string)
}

// Start runs a recorder; onPush, when set, is called with each push's
// token after it is recorded (a simulated device waking up).
func Start(onPush func(token string)) *Server {
	s := &Server{pushes: map[string][]time.Time{}, onPush: onPush}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
		if r.Method != http.MethodPost || !ok || r.ProtoMajor != 2 {
			http.Error(w, `{"reason":"BadPath"}`, http.StatusNotFound)
			return
		}
		s.mu.Lock()
		s.pushes[token] = append(s.pushes[token], time.Now())
		s.mu.Unlock()
		if s.onPush != nil {
			s.onPush(token)
		}
		w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000000")
		w.WriteHeader(http.StatusOK)
	}))
	s.EnableHTTP2 = true
	s.StartTLS()
	return s
}

// Pushes returns a copy of the pushes received, by token.
func (s *Server) Pushes() map[string][]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]time.Time, len(s.pushes))
	for k, v := range s.pushes {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}

// Tokens is how many distinct devices were pushed to.
func (s *Server) Tokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pushes)
}

// Roots trusts the server's certificate.
func (s *Server) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

// RootPEM is the server's certificate, for SSL_CERT_FILE.
func (s *Server) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// PushCertificate is an MDM push certificate as Apple issues it, with the
// topic in the subject's UID, valid for a year as Apple's are; also
// returned as PEM certificate and key.
func PushCertificate(topic string) (tls.Certificate, []byte, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	uid := pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, Value: topic}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "APSP:test", ExtraNames: []pkix.AttributeTypeAndValue{uid}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
}
