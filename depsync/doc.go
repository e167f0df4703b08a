// Package depsync keeps Vestibule's copy of the organisation's Apple
// Business Manager inventory: it fetches and syncs the devices assigned to
// this MDM server with the DEP API (micromdm/nanodep's godep client), and
// reads the device-info header Setup Assistant sends. Inventory is a fact
// for the approver; nothing here enrolls or approves a device.
package depsync
