package depsync

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"

	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

// DeviceInfoHeader is the header Setup Assistant sends to the
// configuration_web_url.
const DeviceInfoHeader = "x-apple-aspen-deviceinfo"

// ErrDeviceInfo means the device-info header is missing or malformed.
var ErrDeviceInfo = errors.New("device info header")

// DeviceInfo is what Setup Assistant says about the device. It is signed by
// Apple, but Vestibule does not hold Apple's signing root, so the
// signature is checked for integrity only: every field is a claim, shown to
// the approver, never a credential.
type DeviceInfo struct {
	Serial   string `plist:"SERIAL"`
	UDID     string `plist:"UDID"`
	Product  string `plist:"PRODUCT"`
	Version  string `plist:"VERSION"`
	IMEI     string `plist:"IMEI"`
	MEID     string `plist:"MEID"`
	Language string `plist:"LANGUAGE"`
}

// maxDeviceInfo bounds the header; Apple's is a few kilobytes.
const maxDeviceInfo = 32 << 10

// ParseDeviceInfoHeader reads the base64 CMS the header carries: a
// well-formed SignedData whose signature verifies over its plist content.
func ParseDeviceInfoHeader(v string) (DeviceInfo, error) {
	if v == "" {
		return DeviceInfo{}, fmt.Errorf("%w: missing", ErrDeviceInfo)
	}
	if len(v) > maxDeviceInfo {
		return DeviceInfo{}, fmt.Errorf("%w: %d bytes is too long", ErrDeviceInfo, len(v))
	}
	der, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("%w: not base64", ErrDeviceInfo)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("%w: not CMS: %v", ErrDeviceInfo, err)
	}
	if len(p7.Signers) == 0 {
		return DeviceInfo{}, fmt.Errorf("%w: not signed", ErrDeviceInfo)
	}
	if err := p7.Verify(); err != nil {
		return DeviceInfo{}, fmt.Errorf("%w: signature: %v", ErrDeviceInfo, err)
	}
	var info DeviceInfo
	if err := plistguard.Unmarshal(p7.Content, &info, plistguard.DefaultLimits()); err != nil {
		return DeviceInfo{}, fmt.Errorf("%w: content: %v", ErrDeviceInfo, err)
	}
	if info.Serial == "" || info.UDID == "" || len(info.Serial) > 64 || len(info.UDID) > 64 {
		return DeviceInfo{}, fmt.Errorf("%w: serial or UDID missing or too long", ErrDeviceInfo)
	}
	return info, nil
}
