package depsync

import (
	"context"
	"fmt"

	"github.com/micromdm/nanodep/godep"
)

// ProfileAPI is the part of the DEP API that defines and assigns profiles.
type ProfileAPI interface {
	DefineProfile(ctx context.Context, name string, profile *godep.ProfileJson) (*godep.DefineProfileResponseJson, error)
	AssignProfile(ctx context.Context, name, uuid string, serials ...string) (*godep.AssignProfileResponseJson, error)
}

// ProfileSettings describe the DEP profile: Setup Assistant opens WebURL
// (the portal's DEP path), where the person signs in at the IdP before any
// enrollment profile exists for the device.
type ProfileSettings struct {
	Name           string
	WebURL         string
	Department     string
	SupportPhone   string
	SupportEmail   string
	SkipSetupItems []string
}

// DefineAndAssign defines the DEP profile and assigns it to serials. The
// profile is mandatory and not removable, and the device waits in Setup
// Assistant until configured; none of that lets a device in without the
// ceremony, it only keeps the ceremony from being skipped.
func DefineAndAssign(ctx context.Context, api ProfileAPI, name string, s ProfileSettings, serials []string) (string, map[string]string, error) {
	yes := true
	p := &godep.ProfileJson{ProfileName: &s.Name, Url: &s.WebURL, ConfigurationWebUrl: &s.WebURL, IsMandatory: &yes, IsMdmRemovable: false,
		AwaitDeviceConfigured: &yes, IsSupervised: &yes, SkipSetupItems: s.SkipSetupItems}
	for dst, v := range map[**string]string{&p.Department: s.Department, &p.SupportPhoneNumber: s.SupportPhone, &p.SupportEmailAddress: s.SupportEmail} {
		if v != "" {
			v := v
			*dst = &v
		}
	}
	def, err := api.DefineProfile(ctx, name, p)
	if err != nil {
		return "", nil, fmt.Errorf("define DEP profile: %w", err)
	}
	if def.ProfileUuid == nil || *def.ProfileUuid == "" {
		return "", nil, fmt.Errorf("define DEP profile: no profile UUID in the answer")
	}
	uuid := *def.ProfileUuid
	results := map[string]string{}
	for start := 0; start < len(serials); start += 1000 {
		end := min(start+1000, len(serials))
		res, err := api.AssignProfile(ctx, name, uuid, serials[start:end]...)
		if err != nil {
			return uuid, results, fmt.Errorf("assign DEP profile: %w", err)
		}
		for serial, r := range res.Devices {
			results[serial] = string(r)
		}
	}
	return uuid, results, nil
}
