package plistguard_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/internal/plisttest"
	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

var update = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz from plisttest.HostileDocuments")

// seedLimit keeps the committed corpus small; larger hostile documents are
// added by f.Add at every run instead.
const seedLimit = 16 << 10

// fuzzDecode is the property both targets check: the guard never panics,
// and whatever it accepts the decoder handles without panicking, running
// out of stack or allocating without bound (the fuzzer would crash).
func fuzzDecode(t *testing.T, body []byte) {
	doc, err := plistguard.Check(body, plistguard.DefaultLimits())
	if err != nil {
		return
	}
	var v any
	_ = doc.Decode(&v)
	var report struct {
		UDID        string
		Status      string
		CommandUUID string
		ErrorChain  []struct{ ErrorCode int }
		Token       []byte
		Awaiting    bool
		Nested      map[string]any
	}
	_ = doc.Decode(&report)
}

func FuzzBinaryPlist(f *testing.F) {
	f.Add(plisttest.Encode(message))
	for _, h := range plisttest.HostileDocuments() {
		if bytes.HasPrefix(h.Body, []byte("bplist")) && len(h.Body) <= seedLimit {
			f.Add(h.Body)
		}
	}
	f.Fuzz(fuzzDecode)
}

func FuzzXMLPlist(f *testing.F) {
	xmlBody, err := plist.Marshal(message)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(xmlBody)
	for _, h := range plisttest.HostileDocuments() {
		if !bytes.HasPrefix(h.Body, []byte("bplist")) && len(h.Body) <= seedLimit {
			f.Add(h.Body)
		}
	}
	f.Fuzz(fuzzDecode)
}

// TestSeedCorpus keeps testdata/fuzz in step with the hostile catalogue,
// so that `go test -fuzz` starts from every attack of the review.
func TestSeedCorpus(t *testing.T) {
	for _, h := range plisttest.HostileDocuments() {
		if len(h.Body) > seedLimit {
			continue
		}
		target := "FuzzXMLPlist"
		if bytes.HasPrefix(h.Body, []byte("bplist")) {
			target = "FuzzBinaryPlist"
		}
		path := filepath.Join("testdata", "fuzz", target, h.Name)
		want := []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", h.Body))
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale: run go test -run TestSeedCorpus -update ./mdm/plistguard/", path)
		}
	}
}
