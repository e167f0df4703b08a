package acme

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func TestDecodeAttestation(t *testing.T) {
	enc := func(v any) string {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	good := enc(map[string]any{"fmt": "apple", "attStmt": map[string]any{"x5c": [][]byte{{1}, {2}}}})
	if chain, err := decodeAttestation(good); err != nil || len(chain) != 2 {
		t.Fatalf("good: %v %v", chain, err)
	}
	deep := []any{}
	for range 10 {
		deep = []any{deep}
	}
	for name, in := range map[string]string{
		"empty":            "",
		"not base64":       "!!!",
		"not CBOR":         base64.RawURLEncoding.EncodeToString([]byte{0xff, 0x00}),
		"another format":   enc(map[string]any{"fmt": "tpm", "attStmt": map[string]any{"x5c": [][]byte{{1}}}}),
		"no chain":         enc(map[string]any{"fmt": "apple", "attStmt": map[string]any{}}),
		"too long a chain": enc(map[string]any{"fmt": "apple", "attStmt": map[string]any{"x5c": [][]byte{{1}, {2}, {3}, {4}, {5}}}}),
		"too deep":         enc(map[string]any{"fmt": "apple", "attStmt": map[string]any{"x5c": deep}}),
		"duplicate keys":   base64.RawURLEncoding.EncodeToString([]byte{0xa2, 0x63, 'f', 'm', 't', 0x61, 'a', 0x63, 'f', 'm', 't', 0x61, 'b'}),
		"oversized":        strings.Repeat("A", maxAttObj*2),
	} {
		if _, err := decodeAttestation(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeAttestation: whatever a device sends as attObj, decoding ends
// in a chain or an error, within bounds.
func FuzzDecodeAttestation(f *testing.F) {
	b, _ := cbor.Marshal(map[string]any{"fmt": "apple", "attStmt": map[string]any{"x5c": [][]byte{{0x30, 0x00}}}})
	f.Add(base64.RawURLEncoding.EncodeToString(b))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte{0x9f, 0x9f, 0x9f}))
	f.Fuzz(func(t *testing.T, attObj string) {
		chain, err := decodeAttestation(attObj)
		if err == nil && (len(chain) == 0 || len(chain) > maxX5C) {
			t.Fatalf("a chain of %d", len(chain))
		}
	})
}

// FuzzParseJWS: whatever a client sends, parsing ends in a request to
// verify or an error.
func FuzzParseJWS(f *testing.F) {
	f.Add([]byte(`{"protected":"eyJhbGciOiJFUzI1NiIsIm5vbmNlIjoibiIsInVybCI6InUiLCJraWQiOiJrIn0","payload":"","signature":"AAAA"}`))
	f.Add([]byte(`{"protected":"e30","payload":"e30","signature":""}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		jws, sg, err := parseJWS(body)
		if err != nil {
			return
		}
		if jws == nil || sg.URL == "" || (sg.KeyID == "") == (sg.JWK == nil) {
			t.Fatalf("accepted a request without url or with jwk and kid: %+v", sg)
		}
	})
}
