package mdm

import (
	"crypto/rand"
	"fmt"

	"github.com/micromdm/plist"
)

// Command is a command as the device receives it.
type Command struct {
	CommandUUID string
	Command     any
}

// Encode returns the command plist.
func (c Command) Encode() ([]byte, error) {
	b, err := plist.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.RequestType(), err)
	}
	return b, nil
}

// RequestType names the command.
func (c Command) RequestType() string {
	switch p := c.Command.(type) {
	case DeviceInformationPayload:
		return p.RequestType
	case ProfileListPayload:
		return p.RequestType
	case InstallProfilePayload:
		return p.RequestType
	}
	return ""
}

// DeviceInformationPayload asks the device about itself. With a
// DeviceAttestationNonce and the DevicePropertiesAttestation query, a
// device that supports Managed Device Attestation answers with a chain
// from Apple's attestation CA.
type DeviceInformationPayload struct {
	RequestType            string
	Queries                []string
	DeviceAttestationNonce []byte `plist:",omitempty"`
}

// ProfileListPayload asks for the installed profiles.
type ProfileListPayload struct {
	RequestType string
}

// InstallProfilePayload installs a configuration profile as given.
type InstallProfilePayload struct {
	RequestType string
	Payload     []byte
}

// DeviceInformationQueries are the facts asked for after approval: enough to
// tell the approver's claim from the device's answer, and to inventory it.
var DeviceInformationQueries = []string{
	"UDID", "SerialNumber", "Model", "ModelName", "ProductName", "DeviceName", "OSVersion", "BuildVersion",
	"IMEI", "MEID", "WiFiMAC", "BluetoothMAC", "IsSupervised", "IsActivationLockEnabled", "IsDeviceLocatorServiceEnabled",
	"IsCloudBackupEnabled", "IsMDMLostModeEnabled", "DeviceCapacity", "AvailableDeviceCapacity", "EASDeviceIdentifier",
}

// NewUUID returns a random upper-case UUID, the form Apple's examples use.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// NewDeviceInformation builds a DeviceInformation command.
func NewDeviceInformation(queries ...string) Command {
	if len(queries) == 0 {
		queries = DeviceInformationQueries
	}
	return Command{CommandUUID: NewUUID(), Command: DeviceInformationPayload{RequestType: "DeviceInformation", Queries: queries}}
}

// AttestationQueries are what the one question to a pending device asks:
// the attestation and the hardware facts to hold it against.
var AttestationQueries = []string{"DevicePropertiesAttestation", "UDID", "SerialNumber", "Model", "ModelName", "ProductName",
	"OSVersion", "BuildVersion"}

// NewAttestationQuestion builds the DeviceInformation command a pending
// device may receive: it asks, installs nothing. nonce is at most 32 bytes.
func NewAttestationQuestion(nonce []byte) Command {
	return Command{CommandUUID: NewUUID(), Command: DeviceInformationPayload{RequestType: "DeviceInformation",
		Queries: AttestationQueries, DeviceAttestationNonce: nonce}}
}

// NewProfileList builds a ProfileList command.
func NewProfileList() Command {
	return Command{CommandUUID: NewUUID(), Command: ProfileListPayload{RequestType: "ProfileList"}}
}

// NewInstallProfile builds an InstallProfile command carrying profile
// unchanged (signed or not).
func NewInstallProfile(profile []byte) Command {
	return Command{CommandUUID: NewUUID(), Command: InstallProfilePayload{RequestType: "InstallProfile", Payload: profile}}
}
