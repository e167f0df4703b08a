package web

import (
	"net/http"

	"github.com/vestibule-mdm/vestibule/internal/clientaddr"
)

// clientIP is the request's client address (see clientaddr).
func clientIP(r *http.Request) string { return clientaddr.Of(r) }
