package acme

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// algorithms a request may be signed with: those of the keys Apple's
// client and the common clients make.
var algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.EdDSA}

// maxRequest bounds a request body: the largest, finalize, carries a CSR.
const maxRequest = 64 << 10

// signed is a verified JWS request.
type signed struct {
	Payload []byte
	Nonce   string
	URL     string
	// KeyID is the account URL (kid), or JWK the new account's key.
	KeyID string
	JWK   *jose.JSONWebKey
}

// parseJWS reads a flattened JWS (RFC 8555 §6.2) without verifying it: the
// caller finds the key (jwk or kid) and calls verify.
func parseJWS(body []byte) (*jose.JSONWebSignature, signed, error) {
	var out signed
	if len(body) == 0 || len(body) > maxRequest {
		return nil, out, fmt.Errorf("request body of %d bytes", len(body))
	}
	jws, err := jose.ParseSignedJSON(string(body), algorithms)
	if err != nil {
		return nil, out, fmt.Errorf("not a JWS: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, out, errors.New("a request carries exactly one signature")
	}
	h := jws.Signatures[0].Protected
	out.Nonce, out.KeyID = h.Nonce, h.KeyID
	if h.JSONWebKey != nil {
		out.JWK = h.JSONWebKey
	}
	if (out.KeyID == "") == (out.JWK == nil) {
		return nil, out, errors.New("the protected header needs exactly one of jwk and kid")
	}
	if out.JWK != nil && !out.JWK.IsPublic() {
		return nil, out, errors.New("jwk must be a public key")
	}
	url, ok := h.ExtraHeaders["url"].(string)
	if !ok || url == "" {
		return nil, out, errors.New(`the protected header needs "url"`)
	}
	out.URL = url
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return nil, out, errors.New(`"crit" is not supported`)
	}
	if b64, ok := h.ExtraHeaders["b64"]; ok && b64 != true {
		return nil, out, errors.New("unencoded payloads are not supported")
	}
	return jws, out, nil
}

// verify checks the signature with key and returns the payload.
func verify(jws *jose.JSONWebSignature, key *jose.JSONWebKey) ([]byte, error) {
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	return payload, nil
}

// thumbprint is the RFC 7638 thumbprint of a key, base64url.
func thumbprint(key *jose.JSONWebKey) (string, error) {
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// decodePayload reads a JSON payload; an empty one is POST-as-GET.
func decodePayload(payload []byte, v any) error {
	if len(payload) == 0 {
		return errors.New("a payload is required")
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("payload: %v", err)
	}
	return nil
}
