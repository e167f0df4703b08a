package acme

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// The attestation object is small: a format and a chain of two or three
// certificates. The decoder refuses anything deeper or larger.
const (
	maxAttObj   = 32 << 10
	maxX5C      = 4
	maxCBORNest = 4
)

var attDecoder = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  maxCBORNest,
		MaxArrayElements: 16,
		MaxMapPairs:      16,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

type attestationObject struct {
	Format  string          `cbor:"fmt"`
	AttStmt attestationStmt `cbor:"attStmt"`
}

type attestationStmt struct {
	X5C [][]byte `cbor:"x5c"`
}

// ErrNotApple: the attestation is not Apple's format.
var ErrNotApple = errors.New(`attestation format is not "apple"`)

// decodeAttestation reads the challenge's payload value attObj
// (base64url CBOR) and returns the certificate chain, leaf first.
func decodeAttestation(attObj string) ([][]byte, error) {
	if attObj == "" {
		return nil, errors.New("no attestation object (attObj)")
	}
	if len(attObj) > maxAttObj*4/3+4 {
		return nil, fmt.Errorf("attestation object over %d bytes", maxAttObj)
	}
	raw, err := base64.RawURLEncoding.DecodeString(attObj)
	if err != nil {
		return nil, fmt.Errorf("attObj is not base64url: %v", err)
	}
	if err := attDecoder.Wellformed(raw); err != nil {
		return nil, fmt.Errorf("attestation object is not CBOR: %v", err)
	}
	var obj attestationObject
	if err := attDecoder.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("attestation object: %v", err)
	}
	if obj.Format != "apple" {
		return nil, fmt.Errorf("%w (%q)", ErrNotApple, cut(obj.Format, 32))
	}
	if len(obj.AttStmt.X5C) == 0 || len(obj.AttStmt.X5C) > maxX5C {
		return nil, fmt.Errorf("attestation chain (x5c) of %d certificates", len(obj.AttStmt.X5C))
	}
	return obj.AttStmt.X5C, nil
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
