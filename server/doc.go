// Package server is Vestibule's composition root: it turns a configuration
// into a store, keys, services and routes, and runs the HTTP listener with
// request IDs, logging, metrics, health checks and graceful shutdown.
package server
