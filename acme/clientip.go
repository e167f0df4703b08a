package acme

import (
	"net/http"

	"github.com/vestibule-mdm/vestibule/internal/clientaddr"
)

func clientIP(r *http.Request) string { return clientaddr.Of(r) }
