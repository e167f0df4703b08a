package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/internal/devicesim"
)

// simulatedDevice is what `simulate` keeps between runs, beside the
// profile: the device's identity, as a Mac keeps it in its keychain.
type simulatedDevice struct {
	UDID      string            `json:"udid"`
	Serial    string            `json:"serial"`
	Key       []byte            `json:"key"`  // PKCS#1 DER
	Cert      []byte            `json:"cert"` // DER
	PushToken []byte            `json:"push_token"`
	Profile   devicesim.Profile `json:"profile"`
	TrustCert []byte            `json:"trust_cert,omitempty"`
	// Approved: the device once received a command beyond the attestation
	// question, which only an approved device gets. An approved device
	// with nothing queued receives nothing, like a pending one.
	Approved bool `json:"approved,omitempty"`
}

func (a *app) simulateCmd() *cobra.Command {
	var statePath, serial string
	cmd := &cobra.Command{
		Use:   "simulate PROFILE.mobileconfig [--serial SERIAL]",
		Short: "Play a Mac: install an enrollment profile and check in, as a device does over HTTP",
		Long: `Play a Mac without one. The first run installs the profile as a simulated
Mac would: it gets its identity certificate over SCEP with the profile's
challenge, sends Authenticate and TokenUpdate, then connects. It reports what
the server answered: a pending device receives only the attestation question
(a simulated Mac has no Secure Enclave, so it answers without attestation)
and nothing else.

Run it again after an administrator approved the device: it connects again
and shows the commands it received and acknowledged. The device's identity
is kept in PROFILE.device.json between runs (--state to choose the file).

It talks HTTP to the URLs in the profile, like a device; it needs no access
to the server's store. ACME profiles need a real Secure Enclave: issue a SCEP
profile for the simulator (the default).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if statePath == "" {
				statePath = strings.TrimSuffix(args[0], ".mobileconfig") + ".device.json"
			}
			return a.simulate(cmd.Context(), args[0], statePath, serial)
		},
	}
	cmd.Flags().StringVar(&statePath, "state", "", "file keeping the simulated device between runs (default PROFILE.device.json)")
	cmd.Flags().StringVar(&serial, "serial", "", "the simulated Mac's serial number (default: a random SIM… serial)")
	return cmd
}

func (a *app) simulate(ctx context.Context, profilePath, statePath, serial string) error {
	client := &http.Client{Timeout: 30 * time.Second}
	d, approved, fresh, err := loadSimulated(client, statePath)
	if err != nil {
		return err
	}
	if fresh {
		b, err := os.ReadFile(profilePath)
		if err != nil {
			return err
		}
		if serial == "" {
			serial = "SIM" + strings.ToUpper(strings.ReplaceAll(devicesim.New(nil, "").UDID, "-", "")[:9])
		}
		d = devicesim.New(client, serial)
		if err := d.Install(b); err != nil {
			return fmt.Errorf("install %s: %w", profilePath, err)
		}
		if d.Profile.ACMEDirectory != "" {
			return errors.New("this is an ACME profile: its identity key must be made in a real Secure Enclave. " +
				"Issue a SCEP profile for the simulator: `vestibule profile issue --identity scep`")
		}
		fmt.Fprintf(a.out, "simulated Mac %s (UDID %s) installs %s\n", d.Serial, d.UDID, profilePath)
		if err := d.Enroll(ctx); err != nil {
			return fmt.Errorf("SCEP: %w (is the profile used already, or expired? issue a new one)", err)
		}
		fmt.Fprintf(a.out, "  SCEP: identity certificate for device %s\n", d.Cert.Subject.CommonName)
		code, err := d.Authenticate(ctx)
		if err := checked("Authenticate", code, err); err != nil {
			return err
		}
		fmt.Fprintln(a.out, "  Authenticate: accepted; the device waits for approval")
		if code, err = d.TokenUpdate(ctx); checked("TokenUpdate", code, err) != nil {
			return checked("TokenUpdate", code, err)
		}
		if err := saveSimulated(statePath, d, false); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.out, "simulated Mac %s (UDID %s) connects again\n", d.Serial, d.UDID)
	}
	received, err := serveCommands(ctx, d)
	onlyQuestion := len(received) == 0 || (len(received) == 1 && received[0] == "DeviceInformation (the attestation question)")
	approved = approved || !onlyQuestion
	if saveErr := saveSimulated(statePath, d, approved); saveErr != nil && err == nil {
		err = saveErr
	}
	if err != nil {
		return err
	}
	switch {
	case onlyQuestion && approved:
		fmt.Fprintln(a.out, "  Connect: approved, no command waiting")
	case onlyQuestion:
		fmt.Fprintln(a.out, "  Connect: pending, nothing received but the attestation question")
		fmt.Fprintf(a.out, "approve it (console, or `vestibule enrollments approve %s`), then run this again\n", d.Cert.Subject.CommonName)
	default:
		fmt.Fprintf(a.out, "  Connect: received and acknowledged %d commands:\n", len(received))
		for _, c := range received {
			fmt.Fprintf(a.out, "    %s\n", c)
		}
	}
	fmt.Fprintf(a.out, "state kept in %s\n", statePath)
	return nil
}

func checked(step string, code int, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: the server answered HTTP %d (see its log)", step, code)
	}
	return nil
}

// serveCommands answers every command the server has for the device, as
// a Mac would, and returns what it received.
func serveCommands(ctx context.Context, d *devicesim.Device) ([]string, error) {
	var received []string
	code, cmd, err := d.Connect(ctx, "Idle", "")
	for range 50 {
		if err != nil {
			return received, fmt.Errorf("Connect: %w", err)
		}
		if code == http.StatusUnauthorized {
			return received, errors.New("Connect: refused: the server no longer accepts this device (denied, revoked, retired or checked out)")
		}
		if code != http.StatusOK {
			return received, fmt.Errorf("Connect: HTTP %d", code)
		}
		if cmd == nil {
			return received, nil
		}
		what := cmd.RequestType
		switch {
		case what == "DeviceInformation" && bytes.Contains(cmd.Raw, []byte("DeviceAttestationNonce")):
			what = "DeviceInformation (the attestation question)"
		case what == "InstallProfile":
			if err := d.InstallTrustProfile(ctx, cmd); err == nil {
				what = "InstallProfile (device-trust certificate " + d.TrustCert.SerialNumber.Text(16) + ")"
			} else if !errors.Is(err, devicesim.ErrNotTrustProfile) {
				return received, err
			}
		}
		received = append(received, what)
		code, cmd, err = d.Answer(ctx, cmd)
	}
	return received, errors.New("the server keeps sending commands")
}

// loadSimulated reads a saved device; fresh when there is none yet.
func loadSimulated(client *http.Client, path string) (d *devicesim.Device, approved, fresh bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, true, nil
	}
	if err != nil {
		return nil, false, false, err
	}
	var s simulatedDevice
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, false, false, fmt.Errorf("%s: %w", path, err)
	}
	key, err := x509.ParsePKCS1PrivateKey(s.Key)
	if err != nil {
		return nil, false, false, fmt.Errorf("%s: key: %w", path, err)
	}
	cert, err := x509.ParseCertificate(s.Cert)
	if err != nil {
		return nil, false, false, fmt.Errorf("%s: certificate: %w", path, err)
	}
	d = devicesim.New(client, s.Serial)
	d.UDID, d.Key, d.Cert, d.PushToken, d.Profile = s.UDID, key, cert, s.PushToken, s.Profile
	if len(s.TrustCert) > 0 {
		// Kept so that the next save does not drop it.
		if d.TrustCert, err = x509.ParseCertificate(s.TrustCert); err != nil {
			return nil, false, false, fmt.Errorf("%s: trust certificate: %w", path, err)
		}
	}
	return d, s.Approved, false, nil
}

func saveSimulated(path string, d *devicesim.Device, approved bool) error {
	s := simulatedDevice{UDID: d.UDID, Serial: d.Serial, Key: x509.MarshalPKCS1PrivateKey(d.Key), Cert: d.Cert.Raw,
		PushToken: d.PushToken, Profile: d.Profile, Approved: approved}
	if d.TrustCert != nil {
		s.TrustCert = d.TrustCert.Raw
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	// The file holds the device's private key.
	return os.WriteFile(path, b, 0o600)
}
