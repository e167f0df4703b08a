package mdm

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/internal/plisttest"
	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeCheckin(t *testing.T) {
	for _, tc := range []struct {
		file  string
		check func(t *testing.T, m any)
	}{
		{"authenticate_macos.plist", func(t *testing.T, m any) {
			a := m.(*Authenticate)
			if a.UDID != "0000FE00-5FADE1A3D4EE0A4C" || a.SerialNumber != "C02XL0GHJGH5" || a.Model != "Mac14,9" || a.OSVersion != "14.5" ||
				a.DeviceName != "Alice's MacBook Pro" || !a.DeviceChannel() {
				t.Errorf("%+v", a)
			}
		}},
		{"authenticate_ios.plist", func(t *testing.T, m any) {
			a := m.(*Authenticate)
			if a.IMEI != "35 391310 123456 7" || a.MEID != "35391310123456" || a.ProductName != "iPhone15,3" {
				t.Errorf("%+v", a)
			}
		}},
		{"tokenupdate.plist", func(t *testing.T, m any) {
			u := m.(*TokenUpdate)
			if len(u.Token) != 32 || u.PushMagic == "" || len(u.UnlockToken) == 0 || u.AwaitingConfiguration {
				t.Errorf("%+v", u)
			}
		}},
		{"checkout.plist", func(t *testing.T, m any) {
			if m.(*CheckOut).UDID == "" {
				t.Error("no UDID")
			}
		}},
		{"user_authenticate.plist", func(t *testing.T, m any) {
			u := m.(*UserAuthenticate)
			if u.DeviceChannel() || u.UserShortName != "alice" {
				t.Errorf("%+v", u)
			}
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			m, err := DecodeCheckin(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, m)
		})
	}
}

func plistOf(t testing.TB, v map[string]any) []byte {
	b, err := plist.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeCheckinRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"error/empty", nil, ErrMalformed},
		{"error/not a plist", []byte("hello"), ErrMalformed},
		{"error/truncated", readTestdata(t, "authenticate_macos.plist")[:200], ErrMalformed},
		{"error/json", []byte(`{"MessageType":"Authenticate"}`), ErrMalformed},
		{"error/no message type", plistOf(t, map[string]any{"UDID": "x"}), ErrMissingField},
		{"error/unknown message type", plistOf(t, map[string]any{"MessageType": "Frobnicate", "UDID": "x"}), ErrUnknownMessageType},
		{"error/authenticate without UDID", plistOf(t, map[string]any{"MessageType": "Authenticate", "Topic": "t"}), ErrMissingField},
		{"error/authenticate without topic", plistOf(t, map[string]any{"MessageType": "Authenticate", "UDID": "x"}), ErrMissingField},
		{"error/token update without token", plistOf(t, map[string]any{"MessageType": "TokenUpdate", "UDID": "x", "Topic": "t", "PushMagic": "m"}), ErrMissingField},
		{"error/wrong type for UDID", plistOf(t, map[string]any{"MessageType": "Authenticate", "UDID": 5, "Topic": "t"}), ErrMalformed},
		{"error/checkout without id", plistOf(t, map[string]any{"MessageType": "CheckOut"}), ErrMissingField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeCheckin(tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeCommandReport(t *testing.T) {
	r, err := DecodeCommandReport(readTestdata(t, "report_error.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != StatusError || r.CommandUUID == "" || len(r.ErrorChain) != 1 || r.ErrorChain[0].ErrorCode != 4001 || len(r.Raw) == 0 {
		t.Errorf("%+v", r)
	}
	if r, err := DecodeCommandReport(readTestdata(t, "report_idle.plist")); err != nil || r.Status != StatusIdle {
		t.Errorf("idle: %+v %v", r, err)
	}
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"error/garbage", []byte("<plist><dict><key>"), ErrMalformed},
		{"error/no status", plistOf(t, map[string]any{"UDID": "x"}), ErrMissingField},
		{"error/unknown status", plistOf(t, map[string]any{"UDID": "x", "Status": "Maybe"}), ErrMalformed},
		{"error/ack without uuid", plistOf(t, map[string]any{"UDID": "x", "Status": "Acknowledged"}), ErrMissingField},
		{"error/no udid", plistOf(t, map[string]any{"Status": "Idle"}), ErrMissingField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeCommandReport(tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCommandsEncode(t *testing.T) {
	for _, c := range []Command{NewDeviceInformation(), NewProfileList(), NewInstallProfile([]byte("<profile/>"))} {
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			CommandUUID string
			Command     map[string]any
		}
		if err := plist.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.CommandUUID != c.CommandUUID || back.Command["RequestType"] != c.RequestType() {
			t.Errorf("%s: %+v", c.RequestType(), back)
		}
		if c.RequestType() == "InstallProfile" && string(back.Command["Payload"].([]byte)) != "<profile/>" {
			t.Error("profile payload changed")
		}
	}
	if NewUUID() == NewUUID() {
		t.Error("UUIDs repeat")
	}
}

func selfSigned(t testing.TB) (*x509.Certificate, *rsa.PrivateKey) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "device"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func TestVerifySignature(t *testing.T) {
	cert, key := selfSigned(t)
	body := readTestdata(t, "authenticate_macos.plist")
	sig, err := Sign(body, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifySignature(sig, body)
	if err != nil || !got.Equal(cert) {
		t.Fatalf("verify: %v", err)
	}
	der, _ := base64.StdEncoding.DecodeString(sig)
	for _, tc := range []struct {
		name   string
		header string
		body   []byte
		want   error
	}{
		{"error/missing", "", body, ErrNoSignature},
		{"error/not base64", "!!!", body, ErrBadSignature},
		{"error/not CMS", base64.StdEncoding.EncodeToString([]byte("hello")), body, ErrBadSignature},
		{"error/truncated CMS", base64.StdEncoding.EncodeToString(der[:len(der)/2]), body, ErrBadSignature},
		{"error/other body", sig, []byte(strings.Replace(string(body), "C02XL0GHJGH5", "C02XL0GHJGH6", 1)), ErrBadSignature},
		{"error/huge header", strings.Repeat("A", 64<<10), body, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifySignature(tc.header, tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// addHostileSeeds seeds a fuzz target with the bodies that stopped the
// server before the plist guard, binary checkin-shaped ones among them.
func addHostileSeeds(f *testing.F) {
	for _, h := range plisttest.HostileDocuments() {
		if len(h.Body) <= 16<<10 {
			f.Add(h.Body)
		}
	}
	f.Add(plisttest.Encode(map[string]any{"MessageType": "Authenticate", "UDID": "u", "Topic": "t"}))
	f.Add(plisttest.Encode(map[string]any{"Status": "Idle", "UDID": "u"}))
}

// TestHostileBodiesAreMalformed runs the review's attack bodies through both
// decoders of device input: before the guard, several of them ended the
// test process (out of memory, stack overflow), not just the test.
func TestHostileBodiesAreMalformed(t *testing.T) {
	for _, h := range plisttest.HostileDocuments() {
		t.Run(h.Name, func(t *testing.T) {
			if _, err := DecodeCheckin(h.Body); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeCheckin = %v, want ErrMalformed", err)
			}
			if _, err := DecodeCommandReport(h.Body); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeCommandReport = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestBinaryCheckinDecodes(t *testing.T) {
	body := plisttest.Encode(map[string]any{"MessageType": "TokenUpdate", "UDID": "u", "Topic": "t",
		"Token": []byte{1, 2}, "PushMagic": "m"})
	m, err := DecodeCheckin(body)
	if err != nil {
		t.Fatal(err)
	}
	if u := m.(*TokenUpdate); u.UDID != "u" || len(u.Token) != 2 {
		t.Fatalf("%+v", u)
	}
}

func FuzzDecodeCheckin(f *testing.F) {
	for _, name := range []string{"authenticate_macos.plist", "authenticate_ios.plist", "tokenupdate.plist", "checkout.plist", "user_authenticate.plist"} {
		f.Add(readTestdata(f, name))
	}
	addHostileSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := DecodeCheckin(body)
		if err == nil && m == nil {
			t.Fatal("nil message without error")
		}
		// Decoding once gives what decoding the envelope, then the
		// message, gives.
		doc, guardErr := plistguard.Check(body, plistguard.DefaultLimits())
		if guardErr != nil {
			return
		}
		want, wantErr := decodeByEnvelope(doc)
		if !reflect.DeepEqual(m, want) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("decoded once: %+v %v; by envelope: %+v %v", m, err, want, wantErr)
		}
	})
}

// TestDecodeCheckinKeyOfAnotherType: a key that belongs to another message
// type, with a value of another type, is ignored as it always was.
func TestDecodeCheckinKeyOfAnotherType(t *testing.T) {
	body := []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>MessageType</key><string>Authenticate</string>
<key>UDID</key><string>u</string>
<key>Topic</key><string>com.apple.mgmt.x</string>
<key>Token</key><string>not data</string>
<key>AwaitingConfiguration</key><string>maybe</string>
</dict></plist>`)
	m, err := DecodeCheckin(body)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := m.(*Authenticate); !ok || a.UDID != "u" || a.Topic != "com.apple.mgmt.x" {
		t.Fatalf("%T %+v", m, m)
	}
}

func FuzzDecodeCommandReport(f *testing.F) {
	for _, name := range []string{"report_idle.plist", "report_error.plist"} {
		f.Add(readTestdata(f, name))
	}
	addHostileSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeCommandReport(body)
		if err == nil && (r.ID() == "" || r.Status == "") {
			t.Fatalf("accepted a report without identity or status: %+v", r)
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	cert, key := selfSigned(f)
	body := []byte("<plist/>")
	sig, _ := Sign(body, cert, key)
	f.Add(sig, body)
	f.Add("", body)
	f.Add("MIIB", []byte{})
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		c, err := VerifySignature(header, b)
		if err == nil && c == nil {
			t.Fatal("verified without a certificate")
		}
	})
}

// FuzzDecodeAttestation: whatever a device sends as its DeviceInformation
// answer, reading the attestation chain out of it is bounded and does not
// panic; an answer holds at most MaxAttestationChain certificates.
func FuzzDecodeAttestation(f *testing.F) {
	withChain, _ := plist.Marshal(map[string]any{"UDID": "u", "Status": "Acknowledged", "CommandUUID": "c",
		"QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{0x30, 0x03, 0x02, 0x01, 0x01}, []byte{0x30, 0x00}}}})
	f.Add(withChain)
	without, _ := plist.Marshal(map[string]any{"UDID": "u", "Status": "Acknowledged", "QueryResponses": map[string]any{"SerialNumber": "S"}})
	f.Add(without)
	f.Add(plisttest.Encode(map[string]any{"QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{1}, []byte{2}, []byte{3}, []byte{4}, []byte{5}}}}))
	addHostileSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		chain, answered, err := DecodeAttestation(body)
		if err == nil && (len(chain) > MaxAttestationChain || answered != (len(chain) > 0)) {
			t.Fatalf("chain of %d, answered %v", len(chain), answered)
		}
	})
}

func TestDecodeAttestation(t *testing.T) {
	five := plisttest.Encode(map[string]any{"QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{1}, []byte{2}, []byte{3}, []byte{4}, []byte{5}}}})
	if _, _, err := DecodeAttestation(five); !errors.Is(err, ErrMalformed) {
		t.Fatalf("five certificates: %v", err)
	}
	two := plisttest.Encode(map[string]any{"QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{1}, []byte{2}}}})
	if chain, answered, err := DecodeAttestation(two); err != nil || !answered || len(chain) != 2 {
		t.Fatalf("two certificates: %v %v %d", err, answered, len(chain))
	}
	none := plisttest.Encode(map[string]any{"QueryResponses": map[string]any{"SerialNumber": "S"}})
	if _, answered, err := DecodeAttestation(none); err != nil || answered {
		t.Fatalf("no attestation: %v %v", err, answered)
	}
}

// BenchmarkDecodeCheckin is Authenticate and TokenUpdate decoded once, and
// the envelope-then-message way it replaced.
func BenchmarkDecodeCheckin(b *testing.B) {
	for _, name := range []string{"authenticate_macos.plist", "tokenupdate.plist"} {
		body := readTestdata(b, name)
		b.Run(name+"/once", func(b *testing.B) {
			for b.Loop() {
				if _, err := DecodeCheckin(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/by-envelope", func(b *testing.B) {
			for b.Loop() {
				doc, err := plistguard.Check(body, plistguard.DefaultLimits())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := decodeByEnvelope(doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifySignature is the Mdm-Signature check of a body the
// server has not seen signed before (Authenticate, TokenUpdate, a
// command's answer): parse the CMS, check the digest, verify the RSA
// signature.
func BenchmarkVerifySignature(b *testing.B) {
	cert, key := selfSigned(b)
	body := readTestdata(b, "authenticate_macos.plist")
	sig, err := Sign(body, cert, key)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := VerifySignature(sig, body); err != nil {
			b.Fatal(err)
		}
	}
}
