package mdm

// quickReport reads the command report every idle device sends, a few
// times an hour, when quickDict can: a dict of known string fields of a
// CommandReport, each once (Status and UDID, for an Idle report). A
// profile of idle check-ins put 12 % of the server's CPU in decoding it
// with the plist decoder, which tokenizes with encoding/xml and allocated
// some ninety times for these two fields. Otherwise ok is false and the
// caller decodes the body behind the guard.
func quickReport(body []byte) (CommandReport, bool) {
	// A report past 4 KB is far past any Idle or Acknowledged one.
	return quickRead(body, 4<<10, reportFields)
}

// reportFields are the string fields of a CommandReport.
var reportFields = []quickField[CommandReport]{
	stringField("Status", func(r *CommandReport) *string { return &r.Status }),
	stringField("UDID", func(r *CommandReport) *string { return &r.UDID }),
	stringField("CommandUUID", func(r *CommandReport) *string { return &r.CommandUUID }),
	stringField("EnrollmentID", func(r *CommandReport) *string { return &r.EnrollmentID }),
	stringField("EnrollmentUserID", func(r *CommandReport) *string { return &r.EnrollmentUserID }),
	stringField("UserID", func(r *CommandReport) *string { return &r.UserID }),
	stringField("UserShortName", func(r *CommandReport) *string { return &r.UserShortName }),
	stringField("UserLongName", func(r *CommandReport) *string { return &r.UserLongName }),
}
