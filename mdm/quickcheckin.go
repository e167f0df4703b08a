package mdm

// quickCheckin reads a check-in message when quickDict can: a dict of
// anyCheckin's fields, each once and of its own type. Authenticate and
// TokenUpdate are once per device and enrollment, but they are what
// Authenticate + TokenUpdate costs: the plist decoder took about 31 µs
// and 230 to 300 allocations for each. Otherwise ok is false and the
// caller decodes the body behind the guard.
func quickCheckin(body []byte) (a anyCheckin, ok bool) {
	var seen [len(checkinFields)]bool
	// An iOS TokenUpdate with its UnlockToken is a few KB.
	ok = quickDict(body, 16<<10, func(key []byte, v quickValue) bool {
		for i, f := range checkinFields {
			if string(key) != f.key {
				continue
			}
			if seen[i] || v.kind != f.kind {
				return false
			}
			seen[i] = true
			return f.set(&a, v)
		}
		return false
	})
	return a, ok
}

// checkinFields are anyCheckin's fields, by the key the decoder fills
// each from (its field name, matched exactly), with their type.
var checkinFields = [...]struct {
	key  string
	kind quickKind
	set  func(*anyCheckin, quickValue) bool
}{
	{"MessageType", quickString, func(a *anyCheckin, v quickValue) bool { a.MessageType = string(v.text); return true }},
	{"UDID", quickString, func(a *anyCheckin, v quickValue) bool { a.UDID = string(v.text); return true }},
	{"UserID", quickString, func(a *anyCheckin, v quickValue) bool { a.UserID = string(v.text); return true }},
	{"UserShortName", quickString, func(a *anyCheckin, v quickValue) bool { a.UserShortName = string(v.text); return true }},
	{"UserLongName", quickString, func(a *anyCheckin, v quickValue) bool { a.UserLongName = string(v.text); return true }},
	{"EnrollmentID", quickString, func(a *anyCheckin, v quickValue) bool { a.EnrollmentID = string(v.text); return true }},
	{"EnrollmentUserID", quickString, func(a *anyCheckin, v quickValue) bool { a.EnrollmentUserID = string(v.text); return true }},
	{"Topic", quickString, func(a *anyCheckin, v quickValue) bool { a.Topic = string(v.text); return true }},
	{"SerialNumber", quickString, func(a *anyCheckin, v quickValue) bool { a.SerialNumber = string(v.text); return true }},
	{"Model", quickString, func(a *anyCheckin, v quickValue) bool { a.Model = string(v.text); return true }},
	{"ModelName", quickString, func(a *anyCheckin, v quickValue) bool { a.ModelName = string(v.text); return true }},
	{"ProductName", quickString, func(a *anyCheckin, v quickValue) bool { a.ProductName = string(v.text); return true }},
	{"OSVersion", quickString, func(a *anyCheckin, v quickValue) bool { a.OSVersion = string(v.text); return true }},
	{"BuildVersion", quickString, func(a *anyCheckin, v quickValue) bool { a.BuildVersion = string(v.text); return true }},
	{"IMEI", quickString, func(a *anyCheckin, v quickValue) bool { a.IMEI = string(v.text); return true }},
	{"MEID", quickString, func(a *anyCheckin, v quickValue) bool { a.MEID = string(v.text); return true }},
	{"DeviceName", quickString, func(a *anyCheckin, v quickValue) bool { a.DeviceName = string(v.text); return true }},
	{"PushMagic", quickString, func(a *anyCheckin, v quickValue) bool { a.PushMagic = string(v.text); return true }},
	{"Endpoint", quickString, func(a *anyCheckin, v quickValue) bool { a.Endpoint = string(v.text); return true }},
	{"DigestResponse", quickString, func(a *anyCheckin, v quickValue) bool { a.DigestResponse = string(v.text); return true }},
	{"AwaitingConfiguration", quickBool, func(a *anyCheckin, v quickValue) bool { a.AwaitingConfiguration = v.b; return true }},
	{"Token", quickData, func(a *anyCheckin, v quickValue) (ok bool) { a.Token, ok = v.bytes(); return ok }},
	{"UnlockToken", quickData, func(a *anyCheckin, v quickValue) (ok bool) { a.UnlockToken, ok = v.bytes(); return ok }},
	{"Data", quickData, func(a *anyCheckin, v quickValue) (ok bool) { a.Data, ok = v.bytes(); return ok }},
	{"BootstrapToken", quickData, func(a *anyCheckin, v quickValue) (ok bool) { a.BootstrapToken, ok = v.bytes(); return ok }},
}
