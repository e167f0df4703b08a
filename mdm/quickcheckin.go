package mdm

// quickCheckin reads a check-in message when quickDict can: a dict of
// anyCheckin's fields, each once and of its own type. Authenticate and
// TokenUpdate are once per device and enrollment, but they are what
// Authenticate + TokenUpdate costs: the plist decoder took about 31 µs
// and 230 to 300 allocations for each. Otherwise ok is false and the
// caller decodes the body behind the guard.
func quickCheckin(body []byte) (anyCheckin, bool) {
	return quickRead(body, maxQuickCheckin, checkinFields)
}

// maxQuickCheckin is the largest check-in read by hand: an iOS
// TokenUpdate with its UnlockToken is a few KB.
const maxQuickCheckin = 16 << 10

// checkinFields are anyCheckin's fields.
var checkinFields = []quickField[anyCheckin]{
	stringField("MessageType", func(a *anyCheckin) *string { return &a.MessageType }),
	stringField("UDID", func(a *anyCheckin) *string { return &a.UDID }),
	stringField("UserID", func(a *anyCheckin) *string { return &a.UserID }),
	stringField("UserShortName", func(a *anyCheckin) *string { return &a.UserShortName }),
	stringField("UserLongName", func(a *anyCheckin) *string { return &a.UserLongName }),
	stringField("EnrollmentID", func(a *anyCheckin) *string { return &a.EnrollmentID }),
	stringField("EnrollmentUserID", func(a *anyCheckin) *string { return &a.EnrollmentUserID }),
	stringField("Topic", func(a *anyCheckin) *string { return &a.Topic }),
	stringField("SerialNumber", func(a *anyCheckin) *string { return &a.SerialNumber }),
	stringField("Model", func(a *anyCheckin) *string { return &a.Model }),
	stringField("ModelName", func(a *anyCheckin) *string { return &a.ModelName }),
	stringField("ProductName", func(a *anyCheckin) *string { return &a.ProductName }),
	stringField("OSVersion", func(a *anyCheckin) *string { return &a.OSVersion }),
	stringField("BuildVersion", func(a *anyCheckin) *string { return &a.BuildVersion }),
	stringField("IMEI", func(a *anyCheckin) *string { return &a.IMEI }),
	stringField("MEID", func(a *anyCheckin) *string { return &a.MEID }),
	stringField("DeviceName", func(a *anyCheckin) *string { return &a.DeviceName }),
	stringField("PushMagic", func(a *anyCheckin) *string { return &a.PushMagic }),
	stringField("Endpoint", func(a *anyCheckin) *string { return &a.Endpoint }),
	stringField("DigestResponse", func(a *anyCheckin) *string { return &a.DigestResponse }),
	{"AwaitingConfiguration", quickBool, func(a *anyCheckin, v quickValue) bool { a.AwaitingConfiguration = v.b; return true }},
	dataField("Token", func(a *anyCheckin) *[]byte { return &a.Token }),
	dataField("UnlockToken", func(a *anyCheckin) *[]byte { return &a.UnlockToken }),
	dataField("Data", func(a *anyCheckin) *[]byte { return &a.Data }),
	dataField("BootstrapToken", func(a *anyCheckin) *[]byte { return &a.BootstrapToken }),
}
