// Package checkin is the device side of MDM: the check-in endpoint
// (Authenticate, TokenUpdate, CheckOut, ...) and the command connection.
// It establishes who a device is from its certificate before it believes
// any field of a request body, then hands the decision to the approval gate
// in package enrollment.
package checkin
