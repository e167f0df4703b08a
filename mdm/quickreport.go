package mdm

// quickReport reads the command report every idle device sends, a few
// times an hour, when quickDict can: a dict of known string fields of a
// CommandReport, each once (Status and UDID, for an Idle report). A
// profile of idle check-ins put 12 % of the server's CPU in decoding it
// with the plist decoder, which tokenizes with encoding/xml and allocated
// some ninety times for these two fields. Otherwise ok is false and the
// caller decodes the body behind the guard.
func quickReport(body []byte) (r CommandReport, ok bool) {
	var seen [len(reportFields)]bool
	// A report past 4 KB is far past any Idle or Acknowledged one.
	ok = quickDict(body, 4<<10, func(key []byte, v quickValue) bool {
		field, i := r.field(key)
		if field == nil || seen[i] || v.kind != quickString {
			return false
		}
		seen[i] = true
		*field = string(v.text)
		return true
	})
	return r, ok
}

// reportFields are the string fields of a CommandReport, by the key
// the decoder fills each from (its field name, matched exactly).
var reportFields = [...]struct {
	key   string
	field func(*CommandReport) *string
}{
	{"Status", func(r *CommandReport) *string { return &r.Status }},
	{"UDID", func(r *CommandReport) *string { return &r.UDID }},
	{"CommandUUID", func(r *CommandReport) *string { return &r.CommandUUID }},
	{"EnrollmentID", func(r *CommandReport) *string { return &r.EnrollmentID }},
	{"EnrollmentUserID", func(r *CommandReport) *string { return &r.EnrollmentUserID }},
	{"UserID", func(r *CommandReport) *string { return &r.UserID }},
	{"UserShortName", func(r *CommandReport) *string { return &r.UserShortName }},
	{"UserLongName", func(r *CommandReport) *string { return &r.UserLongName }},
}

// field is the string field a report's key names, with its index in
// reportFields; nil for any other key (the decoder decides those).
func (r *CommandReport) field(key []byte) (*string, int) {
	for i, f := range reportFields {
		if string(key) == f.key {
			return f.field(r), i
		}
	}
	return nil, 0
}
