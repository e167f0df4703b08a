package seed

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"

	"github.com/vestibule-mdm/vestibule/internal/devicesim"
)

// File is what a seeding run hands a load generator: the device keys
// (PKCS #1 DER) and the devices, each naming its key by index.
type File struct {
	Keys    [][]byte `json:"keys"`
	Devices []Device `json:"devices"`
}

// Keys generates n RSA-2048 device keys.
func Keys(n int) ([]*rsa.PrivateKey, error) {
	out := make([]*rsa.PrivateKey, n)
	for i := range out {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("device key: %w", err)
		}
		out[i] = k
	}
	return out, nil
}

// ReadFile reads a seeding run's file and parses its keys.
func ReadFile(path string) ([]*rsa.PrivateKey, []Device, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	keys := make([]*rsa.PrivateKey, len(f.Keys))
	for i, der := range f.Keys {
		if keys[i], err = x509.ParsePKCS1PrivateKey(der); err != nil {
			return nil, nil, fmt.Errorf("%s: key %d: %w", path, i, err)
		}
	}
	for _, d := range f.Devices {
		if d.Key < 0 || d.Key >= len(keys) {
			return nil, nil, fmt.Errorf("%s: device %s names key %d of %d", path, d.ID, d.Key, len(keys))
		}
	}
	return keys, f.Devices, nil
}

// Simulator returns a simulated device that checks in as d on the server
// at base.
func (d Device) Simulator(client *http.Client, keys []*rsa.PrivateKey, base string) (*devicesim.Device, error) {
	cert, err := x509.ParseCertificate(d.Cert)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.ID, err)
	}
	sim := devicesim.New(client, d.Serial)
	sim.UDID, sim.Key, sim.Cert = d.UDID, keys[d.Key], cert
	sim.Profile.CheckInURL, sim.Profile.ServerURL = base+"/mdm/checkin", base+"/mdm/connect"
	return sim, nil
}
