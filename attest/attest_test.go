package attest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/attest"
	"github.com/vestibule-mdm/vestibule/attest/attesttest"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func TestPinnedAppleRoot(t *testing.T) {
	v, err := attest.New()
	if err != nil {
		t.Fatalf("the embedded Apple root does not load: %v", err)
	}
	// A chain of our own does not verify against Apple's root.
	ca, err := attesttest.NewCA("Foreign", now)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := ca.Chain(attesttest.Leaf{Serial: "S", UDID: "U", Nonce: []byte("n")}, now)
	if _, err := v.Verify(chain, []byte("n")); !errors.Is(err, attest.ErrInvalidChain) {
		t.Fatalf("a foreign chain against the Apple root: %v", err)
	}
	b, err := os.ReadFile("apple_root.pem")
	if err != nil || !bytes.Contains(b, []byte("MIICJDCCAamgAwIBAgIUQsDCuyxyfFxeq")) {
		t.Fatal("apple_root.pem is not the Apple Enterprise Attestation Root CA")
	}
}

func TestVerify(t *testing.T) {
	ca, err := attesttest.NewCA("Test", now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := attesttest.NewCA("Foreign", now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.New(attest.WithRoots(ca.Pool()), attest.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("0123456789abcdef0123456789abcdef")
	honest := attesttest.Leaf{Serial: "C02ATTESTED1", UDID: "UDID-1", OSVersion: "15.1", SEPOSVersion: "22.1", Nonce: nonce}
	with := func(f func(*attesttest.Leaf)) attesttest.Leaf {
		l := honest
		f(&l)
		return l
	}
	for _, tc := range []struct {
		name  string
		ca    *attesttest.CA
		leaf  attesttest.Leaf
		edit  func([][]byte) [][]byte
		want  error
		fresh bool
	}{
		{"ok/fresh and complete", ca, honest, nil, nil, true},
		{"ok/cached a day ago: attested, not fresh", ca, with(func(l *attesttest.Leaf) {
			l.Nonce = []byte("an older nonce")
			l.NotBefore = now.Add(-24 * time.Hour)
		}), nil, nil, false},
		{"error/cached too long ago: stale", ca, with(func(l *attesttest.Leaf) {
			l.Nonce = []byte("an older nonce")
			l.NotBefore = now.Add(-8 * 24 * time.Hour)
		}), nil, attest.ErrStale, false},
		{"error/foreign root", foreign, honest, nil, attest.ErrInvalidChain, false},
		{"error/expired leaf", ca, with(func(l *attesttest.Leaf) {
			l.NotBefore, l.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
		}), nil, attest.ErrInvalidChain, false},
		{"error/missing extensions", ca, with(func(l *attesttest.Leaf) { l.Omit = true }), nil, attest.ErrIncomplete, false},
		{"error/no intermediate", ca, honest, func(c [][]byte) [][]byte { return c[:1] }, attest.ErrInvalidChain, false},
		{"error/garbage", ca, honest, func([][]byte) [][]byte { return [][]byte{[]byte("not a certificate")} }, attest.ErrMalformed, false},
		{"error/empty", ca, honest, func([][]byte) [][]byte { return nil }, attest.ErrMalformed, false},
		{"error/too long a chain", ca, honest, func(c [][]byte) [][]byte { return append(c, c[1], c[1], c[1]) }, attest.ErrMalformed, false},
		{"error/oversized certificate", ca, honest, func(c [][]byte) [][]byte {
			return [][]byte{append(c[0], make([]byte, 20<<10)...)}
		}, attest.ErrMalformed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := tc.ca.Chain(tc.leaf, now)
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				chain = tc.edit(chain)
			}
			r, err := v.Verify(chain, nonce)
			if tc.want != nil {
				if !errors.Is(err, tc.want) || !errors.Is(err, attest.ErrNotAttested) {
					t.Fatalf("Verify = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Serial != "C02ATTESTED1" || r.UDID != "UDID-1" || r.OSVersion != "15.1" || r.SEPOSVersion != "22.1" || r.Fresh != tc.fresh {
				t.Fatalf("%+v", r)
			}
			sum := sha256.Sum256(chain[0])
			if r.LeafSHA256 != hex.EncodeToString(sum[:]) {
				t.Fatal("leaf fingerprint")
			}
		})
	}
	// A freshness code wrapped in an OCTET STRING reads the same.
	sum := sha256.Sum256(nonce)
	wrapped := append([]byte{0x04, 32}, sum[:]...)
	chain, _ := ca.Chain(with(func(l *attesttest.Leaf) { l.FreshnessCode = wrapped }), now)
	if r, err := v.Verify(chain, nonce); err != nil || !r.Fresh {
		t.Fatalf("wrapped freshness code: %v %+v", err, r)
	}
	// No nonce sent: never fresh.
	chain, _ = ca.Chain(with(func(l *attesttest.Leaf) { l.Nonce = nil }), now)
	if r, err := v.Verify(chain, nil); err != nil || r.Fresh {
		t.Fatalf("without a nonce: %v %+v", err, r)
	}
}

// FuzzVerify feeds arbitrary bytes as the chain: the verifier refuses
// without panicking and never calls garbage attested.
func FuzzVerify(f *testing.F) {
	ca, err := attesttest.NewCA("Fuzz", now)
	if err != nil {
		f.Fatal(err)
	}
	chain, _ := ca.Chain(attesttest.Leaf{Serial: "S", UDID: "U", Nonce: []byte("n")}, now)
	f.Add(chain[0], chain[1], []byte("n"))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, []byte{}, []byte{})
	f.Add(chain[0][:len(chain[0])/2], chain[1], []byte("n"))
	v, err := attest.New(attest.WithRoots(ca.Pool()), attest.WithClock(func() time.Time { return now }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, leaf, inter, nonce []byte) {
		r, err := v.Verify([][]byte{leaf, inter}, nonce)
		if err == nil && (r.Serial == "" || r.UDID == "") {
			t.Fatalf("attested without a serial or UDID: %+v", r)
		}
	})
}
