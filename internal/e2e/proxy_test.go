package e2e

import (
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/config"
)

// TestTrustedProxyIdentity: behind a TLS-terminating proxy the device
// certificate arrives in a header, believed only from the configured
// networks; the body is then not signed.
func TestTrustedProxyIdentity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cidr    string
		rfc9440 bool
		want    int
	}{
		{"from the proxy", "127.0.0.0/8", false, 200},
		{"RFC 9440 Client-Cert from the proxy", "127.0.0.0/8", true, 200},
		{"from elsewhere", "192.0.2.0/24", false, 401},
		{"RFC 9440 Client-Cert from elsewhere", "192.0.2.0/24", true, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "sqlite", func(c *config.Config) {
				c.MDM.TrustedProxyHeader, c.MDM.TrustedProxyCIDRs = "Client-Cert", []string{tc.cidr}
			})
			d, _ := e.enrolledDevice("alice@example.com", "SER-PROXY")
			body, _ := plist.Marshal(map[string]any{"MessageType": "Authenticate", "UDID": d.UDID, "SerialNumber": d.Serial, "Topic": d.Profile.Topic})
			req, _ := http.NewRequest("PUT", d.Profile.CheckInURL, strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/x-apple-aspen-mdm-checkin")
			if tc.rfc9440 {
				req.Header.Set("Client-Cert", ":"+base64.StdEncoding.EncodeToString(d.Cert.Raw)+":")
			} else {
				req.Header.Set("Client-Cert", url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.Cert.Raw}))))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
