package archtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// plistDecode matches every way into micromdm/plist's decoder.
var plistDecode = regexp.MustCompile(`\bplist\.(Unmarshal|NewDecoder|NewXMLDecoder|NewBinaryDecoder)\(`)

// TestDevicePlistsGoThroughTheGuard keeps every plist decode in production
// code behind mdm/plistguard, which bounds what a device's document can
// make the decoder allocate. Only code that reads the server's own output
// (the device simulator and the load generator) may call the decoder
// directly.
func TestDevicePlistsGoThroughTheGuard(t *testing.T) {
	allowed := []string{"mdm/plistguard/", "internal/devicesim/", "bench/"}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || rel == "tools" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !plistDecode.Match(b) {
			return nil
		}
		seen++
		for _, a := range allowed {
			if strings.HasPrefix(filepath.ToSlash(rel), a) {
				return nil
			}
		}
		t.Errorf("%s decodes a plist without mdm/plistguard", rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Fatal("found no plist decode at all, not even the guard's: is the pattern right?")
	}
}
