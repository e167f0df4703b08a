package mdm

import (
	"bytes"
	"testing"
)

// TestCommandTemplateFillsLikeEncode: a template filled with a UUID is,
// byte for byte, the command encoded with that UUID.
func TestCommandTemplateFillsLikeEncode(t *testing.T) {
	for _, c := range []Command{NewDeviceInformation(), NewProfileList(), NewInstallProfile([]byte("<plist>wifi secret</plist>")),
		NewInstallProfile(bytes.Repeat([]byte{0xff, 0x00, '<'}, 5000))} {
		tmpl, err := NewCommandTemplate(c)
		if err != nil {
			t.Fatal(err)
		}
		if tmpl.RequestType() != c.RequestType() {
			t.Errorf("request type %q, want %q", tmpl.RequestType(), c.RequestType())
		}
		for range 2 {
			c.CommandUUID = NewUUID()
			want, err := c.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.fill(c.CommandUUID); !bytes.Equal(got, want) {
				t.Fatalf("%s: filled\n%s\nwant\n%s", c.RequestType(), got, want)
			}
		}
		uuid, body := tmpl.New()
		if c.CommandUUID = uuid; !bytes.Equal(body, must(c.Encode())) {
			t.Fatalf("%s: New gave\n%s", c.RequestType(), body)
		}
	}
}

// TestCommandTemplateNeedsItsUUIDOnce: a command whose UUID appears
// elsewhere in its encoding has no template (the fill would be ambiguous).
func TestCommandTemplateNeedsItsUUIDOnce(t *testing.T) {
	c := NewDeviceInformation("UDID")
	c.Command = DeviceInformationPayload{RequestType: "DeviceInformation", Queries: []string{c.CommandUUID}}
	if _, err := NewCommandTemplate(c); err == nil {
		t.Fatal("a template of a command naming its UUID twice")
	}
	c = NewProfileList()
	c.CommandUUID = ""
	if _, err := NewCommandTemplate(c); err == nil {
		t.Fatal("a template of a command without a UUID")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
