package server

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
)

// postApproval queues what an approved device receives: DeviceInformation
// first, so the approver's claims meet the device's answer, then each
// profile of the post-approval folder, in name order.
type postApproval struct {
	dir string
	now func() time.Time

	mu sync.Mutex
	// read is when the folder was last read into cached.
	read   time.Time
	cached []mdm.CommandTemplate
}

// profileReload is how long one reading of the post-approval folder
// serves approvals: a bulk approval reads it about once a second instead
// of once per device, and a profile added, changed or removed applies to
// the approvals that start a second later at most.
const profileReload = time.Second

func newPostApproval(dir string, now func() time.Time) *postApproval {
	return &postApproval{dir: dir, now: now}
}

// maxProfileSize bounds a post-approval profile read into a command.
const maxProfileSize = 4 << 20

// readProfile reads one post-approval profile, never more than
// maxProfileSize bytes of it: a larger file, or one grown past the limit
// since it was listed, is refused, never cut short.
func readProfile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("post-approval profile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProfileSize+1))
	if err != nil {
		return nil, fmt.Errorf("post-approval profile %s: %w", path, err)
	}
	if len(b) > maxProfileSize {
		return nil, fmt.Errorf("post-approval profile %s is larger than %d bytes", path, maxProfileSize)
	}
	return b, nil
}

func (p *postApproval) Commands(enrollment.Enrollment) ([]enrollment.NewCommand, error) {
	templates, err := p.templates()
	if err != nil {
		return nil, err
	}
	out := make([]enrollment.NewCommand, len(templates))
	for i, t := range templates {
		uuid, body := t.New()
		out[i] = enrollment.NewCommand{UUID: uuid, RequestType: t.RequestType(), Body: body}
	}
	return out, nil
}

// templates returns the commands to queue, encoded, reading the folder
// again once profileReload has passed. A failed reading is not kept: the
// next approval tries again.
func (p *postApproval) templates() ([]mdm.CommandTemplate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.cached != nil && !now.Before(p.read) && now.Sub(p.read) < profileReload {
		return p.cached, nil
	}
	cmds := []mdm.Command{mdm.NewDeviceInformation()}
	if p.dir != "" {
		files, err := filepath.Glob(filepath.Join(p.dir, "*.mobileconfig"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			b, err := readProfile(f)
			if err != nil {
				return nil, err
			}
			cmds = append(cmds, mdm.NewInstallProfile(b))
		}
	}
	templates := make([]mdm.CommandTemplate, len(cmds))
	for i, c := range cmds {
		t, err := mdm.NewCommandTemplate(c)
		if err != nil {
			return nil, err
		}
		templates[i] = t
	}
	p.cached, p.read = templates, now
	return templates, nil
}

// newCommand encodes an MDM command for the queue.
func newCommand(c mdm.Command) (enrollment.NewCommand, error) {
	b, err := c.Encode()
	if err != nil {
		return enrollment.NewCommand{}, err
	}
	return enrollment.NewCommand{UUID: c.CommandUUID, RequestType: c.RequestType(), Body: b}, nil
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
	return newCommand(c)
}
