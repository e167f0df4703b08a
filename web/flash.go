package web

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
)

// flashCookie carries the message of the next page after a redirect. The
// server alone writes it; ?flash= and ?error= in a URL are not read, so a
// phishing link cannot make the console or the portal say what it likes.
const flashCookie = "vestibule_flash"

// maxFlash keeps the cookie well under browsers' limits.
const maxFlash = 1000

func setFlash(w http.ResponseWriter, key, msg string) {
	if len(msg) > maxFlash {
		msg = msg[:maxFlash] + "…"
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(key + ":" + msg)),
		Path: "/", MaxAge: 60, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

type messageKey struct{}

// withMessage shows a message on the page rendered for r itself, without
// a redirect.
func withMessage(r *http.Request, key, msg string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), messageKey{}, key+":"+msg))
}

// takeFlash returns the message for this page, flash or error, and clears
// the cookie that carried it.
func takeFlash(w http.ResponseWriter, r *http.Request) (flash, errMsg string) {
	raw, _ := r.Context().Value(messageKey{}).(string)
	if c, err := r.Cookie(flashCookie); err == nil {
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		if raw == "" {
			if b, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
				raw = string(b)
			}
		}
	}
	key, msg, _ := strings.Cut(raw, ":")
	switch key {
	case "flash":
		return msg, ""
	case "error":
		return "", msg
	}
	return "", ""
}
