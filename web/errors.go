package web

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// apiError is the one JSON error shape of the API.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorFor maps a domain error to the API's answer. The message is the
// error's own text for the caller's mistakes; internal failures say only
// that something failed, and the log carries the detail.
func errorFor(err error) apiError {
	switch {
	case errors.Is(err, enrollment.ErrNotFound):
		return apiError{http.StatusNotFound, "not_found", err.Error()}
	case errors.Is(err, enrollment.ErrInvalid):
		return apiError{http.StatusBadRequest, "invalid", err.Error()}
	case errors.Is(err, enrollment.ErrConflict):
		return apiError{http.StatusConflict, "conflict", err.Error()}
	case errors.Is(err, enrollment.ErrForbidden):
		return apiError{http.StatusForbidden, "forbidden", err.Error()}
	case errors.Is(err, auth.ErrBadToken):
		return apiError{http.StatusUnauthorized, "unauthorized", "a valid API token is required"}
	case errors.Is(err, enrollment.ErrSignerUnavailable):
		return apiError{http.StatusServiceUnavailable, "unavailable", "the token signer is unavailable; retry later"}
	default:
		return apiError{http.StatusInternalServerError, "internal", "internal error"}
	}
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := errorFor(err)
	if e.Status >= 500 {
		log.ErrorContext(r.Context(), "api request failed", "path", r.URL.Path, "err", err)
	}
	writeAPIError(w, e)
}

func writeAPIError(w http.ResponseWriter, e apiError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vestibule"`)
	}
	writeJSON(w, e.Status, map[string]apiError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
