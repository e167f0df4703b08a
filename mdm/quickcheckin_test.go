package mdm

import (
	"reflect"
	"strings"
	"testing"
)

func TestQuickCheckin(t *testing.T) {
	tokenUpdate := func(token string) []byte {
		return reportBody("<key>MessageType</key><string>TokenUpdate</string><key>UDID</key><string>u</string>" +
			"<key>Topic</key><string>t</string><key>PushMagic</key><string>m</string><key>Token</key>" + token)
	}
	for _, tc := range []struct {
		name  string
		body  []byte
		quick bool
	}{
		{"Authenticate, macOS", readTestdata(t, "authenticate_macos.plist"), true},
		{"Authenticate, iOS", readTestdata(t, "authenticate_ios.plist"), true},
		{"TokenUpdate", readTestdata(t, "tokenupdate.plist"), true},
		{"CheckOut", readTestdata(t, "checkout.plist"), true},
		{"UserAuthenticate", readTestdata(t, "user_authenticate.plist"), true},
		{"a device name as Apple writes it", reportBody("<key>MessageType</key><string>Authenticate</string><key>DeviceName</key><string>Zoë’s iPhone</string>"), true},
		{"every field", reportBody("<key>MessageType</key><string>m</string><key>UDID</key><string>u</string><key>UserID</key><string>ui</string>" +
			"<key>UserShortName</key><string>us</string><key>UserLongName</key><string>ul</string><key>EnrollmentID</key><string>e</string>" +
			"<key>EnrollmentUserID</key><string>eu</string><key>Topic</key><string>t</string><key>SerialNumber</key><string>s</string>" +
			"<key>Model</key><string>mo</string><key>ModelName</key><string>mn</string><key>ProductName</key><string>p</string>" +
			"<key>OSVersion</key><string>o</string><key>BuildVersion</key><string>b</string><key>IMEI</key><string>i</string>" +
			"<key>MEID</key><string>me</string><key>DeviceName</key><string>d</string><key>PushMagic</key><string>pm</string>" +
			"<key>Endpoint</key><string>ep</string><key>DigestResponse</key><string>dr</string><key>AwaitingConfiguration</key><true/>" +
			"<key>Token</key><data>AQ==</data><key>UnlockToken</key><data>Ag==</data><key>Data</key><data>Aw==</data>" +
			"<key>BootstrapToken</key><data>BA==</data>"), true},
		{"data over lines", tokenUpdate("<data>\n\tAQID\r\n\tBAU=\n</data>"), true},
		{"empty data", tokenUpdate("<data></data>"), true},
		{"data of only whitespace", tokenUpdate("<data>\n\t</data>"), true},
		{"self-closed data", tokenUpdate("<data/>"), true},
		{"no MessageType", reportBody("<key>UDID</key><string>u</string>"), true},

		// The decoder decides each of these.
		{"data not base64", tokenUpdate("<data>AQI</data>"), false},
		{"data with an entity", tokenUpdate("<data>AQ&#61;=</data>"), false},
		{"data in URL alphabet", tokenUpdate("<data>-_8=</data>"), false},
		{"a boolean where a string goes", reportBody("<key>MessageType</key><true/>"), false},
		{"a string where data goes", tokenUpdate("<string>AQ==</string>"), false},
		{"data where a boolean goes", reportBody("<key>AwaitingConfiguration</key><data>AQ==</data>"), false},
		{"a boolean written open", reportBody("<key>AwaitingConfiguration</key><true></true>"), false},
		{"an integer", reportBody("<key>MessageType</key><string>TokenUpdate</string><key>Token</key><integer>1</integer>"), false},
		{"an unknown key", reportBody("<key>MessageType</key><string>Authenticate</string><key>NotOnConsole</key><false/>"), false},
		{"a key twice", reportBody("<key>UDID</key><string>a</string><key>UDID</key><string>b</string>"), false},
		{"a DeviceName with a line break", reportBody("<key>DeviceName</key><string>a\nb</string>"), false},
		{"data running into the next key", tokenUpdate("<data>AQ==<key>UnlockToken</key><data>Ag==</data>"), false},
		{"string running into the next key", reportBody("<key>UDID</key><string>u<key>MessageType</key><string>CheckOut</string>"), false},
		{"too large", reportBody("<key>MessageType</key><string>CheckOut</string>" + strings.Repeat("\n", maxQuickCheckin)), false},
		{"binary", []byte("bplist00\xd1\x01\x02"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if quick := agreesWithDecoder(t, tc.body, quickCheckin); quick != tc.quick {
				t.Fatalf("read quickly: %v, want %v", quick, tc.quick)
			}
			// The whole decode ends the same either way.
			got, gotErr := DecodeCheckin(tc.body)
			want, wantErr := decodeGuarded(tc.body)
			if (gotErr == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("DecodeCheckin: %+v, %v; behind the guard: %+v, %v", got, gotErr, want, wantErr)
			}
		})
	}
}

// FuzzQuickCheckin holds the quick reader of check-ins to the decoder.
func FuzzQuickCheckin(f *testing.F) {
	for _, name := range []string{"authenticate_macos.plist", "authenticate_ios.plist", "tokenupdate.plist", "checkout.plist", "user_authenticate.plist"} {
		f.Add(readTestdata(f, name))
	}
	f.Add(reportBody("<key>MessageType</key><string>TokenUpdate</string><key>Token</key><data>\n\tAQID\r\n</data><key>AwaitingConfiguration</key><true/>"))
	addHostileSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		agreesWithDecoder(t, body, quickCheckin)
	})
}
