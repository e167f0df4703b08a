// Package web owns Vestibule's HTTP faces for people and programs: the JSON
// API under /api/v1 (bearer tokens), and the portal and admin console pages.
// Handlers translate between HTTP and the domain services; the policy lives
// in the domain.
package web
