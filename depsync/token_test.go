package depsync_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/micromdm/nanodep/tokenpki"

	"github.com/vestibule-mdm/vestibule/depsync"
	"github.com/vestibule-mdm/vestibule/depsync/deptest"
)

func TestDecryptServerToken(t *testing.T) {
	key, cert, err := tokenpki.SelfSignedRSAKeypair("vestibule-dep", 1)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, otherCert, err := tokenpki.SelfSignedRSAKeypair("someone else", 1)
	if err != nil {
		t.Fatal(err)
	}
	dep := deptest.Start(t)
	expiry := time.Now().Add(365 * 24 * time.Hour).Truncate(time.Second)
	file, err := dep.ServerTokenFile(cert, expiry)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := depsync.DecryptServerToken(file, cert, key)
	if err != nil {
		t.Fatalf("the token file ABM gives: %v", err)
	}
	if tokens.ConsumerKey != dep.ConsumerKey || tokens.AccessToken != dep.AccessToken || !tokens.AccessTokenExpiry.Equal(expiry) {
		t.Errorf("tokens: %+v", tokens)
	}

	bad := map[string][]byte{
		"empty":        nil,
		"no headers":   []byte("MIAGCSqGSIb3DQEHA6CAMIACAQAx"),
		"truncated":    file[:len(file)/2],
		"not base64":   append(file[:bytes.Index(file, []byte("\r\n\r\n"))+4:bytes.Index(file, []byte("\r\n\r\n"))+4], "!!!!"...),
		"garbage":      bytes.Repeat([]byte{0x30}, 4096),
		"headers only": []byte("Content-Type: application/pkcs7-mime\r\n\r\n"),
	}
	for name, b := range bad {
		if _, err := depsync.DecryptServerToken(b, cert, key); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := depsync.DecryptServerToken(file, otherCert, otherKey); err == nil {
		t.Error("a token for another certificate opened")
	}
}
