// Package push wakes devices through the Apple Push Notification service:
// an MDM push carries only the device's PushMagic, and the device then
// connects for its commands. Pushes come from a durable outbox written in
// the same transaction as the approval or command that needs them.
package push
