// Package store is Vestibule's storage: one sqlx implementation of every
// store interface the domain packages declare, running on SQLite (the
// embedded default) and on PostgreSQL from the same SQL. Dialect-specific
// SQL appears only where a feature demands it.
package store
