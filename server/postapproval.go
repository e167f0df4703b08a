package server

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
)

// postApproval queues what an approved device receives: DeviceInformation
// first, so the approver's claims meet the device's answer, then each
// profile of the post-approval folder, in name order.
type postApproval struct {
	dir string
}

// maxProfileSize bounds a post-approval profile read into a command.
const maxProfileSize = 4 << 20

func (p postApproval) Commands(enrollment.Enrollment) ([]enrollment.NewCommand, error) {
	cmds := []mdm.Command{mdm.NewDeviceInformation()}
	if p.dir != "" {
		files, err := filepath.Glob(filepath.Join(p.dir, "*.mobileconfig"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil {
				return nil, err
			}
			if fi.Size() > maxProfileSize {
				return nil, fmt.Errorf("%s is larger than %d bytes", f, maxProfileSize)
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			cmds = append(cmds, mdm.NewInstallProfile(b))
		}
	}
	return newCommands(cmds...)
}

// newCommands encodes MDM commands for the queue.
func newCommands(cmds ...mdm.Command) ([]enrollment.NewCommand, error) {
	out := make([]enrollment.NewCommand, 0, len(cmds))
	for _, c := range cmds {
		b, err := c.Encode()
		if err != nil {
			return nil, err
		}
		out = append(out, enrollment.NewCommand{UUID: c.CommandUUID, RequestType: c.RequestType(), Body: b})
	}
	return out, nil
}

// commandBuilder makes the commands an admin may queue by name.
type commandBuilder struct{}

func (commandBuilder) Build(requestType string, payload []byte) (enrollment.NewCommand, error) {
	return NewCommand(requestType, payload)
}

// NewCommand builds a command an operator may queue: DeviceInformation or
// ProfileList (approvers and admins), or InstallProfile with the profile as
// payload, sent unchanged, signed or not (admins only; the API checks).
func NewCommand(requestType string, payload []byte) (enrollment.NewCommand, error) {
	var c mdm.Command
	switch requestType {
	case "DeviceInformation":
		c = mdm.NewDeviceInformation()
	case "ProfileList":
		c = mdm.NewProfileList()
	case "InstallProfile":
		if len(payload) == 0 || len(payload) > maxProfileSize {
			return enrollment.NewCommand{}, fmt.Errorf("%w: InstallProfile needs a profile of 1 byte to %d bytes", enrollment.ErrInvalid, maxProfileSize)
		}
		c = mdm.NewInstallProfile(payload)
	default:
		return enrollment.NewCommand{}, fmt.Errorf("%w: request type %q is not one of DeviceInformation, ProfileList, InstallProfile", enrollment.ErrInvalid, requestType)
	}
	cmds, err := newCommands(c)
	if err != nil {
		return enrollment.NewCommand{}, err
	}
	return cmds[0], nil
}
