// Package config owns Vestibule's configuration: the YAML file, the
// VESTIBULE_* environment overrides, the development defaults and the
// validation that names the key at fault.
package config
