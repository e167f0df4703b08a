package web

import (
	"context"
	"net/http"
	"strings"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TokenAuthenticator checks API bearer tokens.
type TokenAuthenticator interface {
	Authenticate(ctx context.Context, secret string) (auth.APIToken, error)
}

type actorKey struct{}

type roleKey struct{}

// roleRank orders roles so a route can ask for "at least".
var roleRank = map[enrollment.Role]int{enrollment.RoleViewer: 1, enrollment.RoleApprover: 2, enrollment.RoleAdmin: 3}

// requireToken admits requests with a live bearer token of at least the
// given role and puts the caller in the context as the audit actor.
func (a *API) requireToken(min enrollment.Role, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, secret, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			writeAPIError(w, apiError{http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <API token>"})
			return
		}
		tok, err := a.tokens.Authenticate(r.Context(), strings.TrimSpace(secret))
		if err != nil {
			writeError(w, r, a.log, err)
			return
		}
		if roleRank[tok.Role] < roleRank[min] {
			writeAPIError(w, apiError{http.StatusForbidden, "forbidden", "this token's role (" + string(tok.Role) + ") may not do this; it needs " + string(min)})
			return
		}
		// The token acts for the person who created it: a token cannot
		// approve its creator's own enrollments.
		creator, _ := strings.CutPrefix(tok.CreatedBy, "user:")
		if strings.Contains(tok.CreatedBy, ":") && !strings.HasPrefix(tok.CreatedBy, "user:") {
			creator = ""
		}
		actor := enrollment.Actor{Name: "api:" + tok.Name, RemoteIP: clientIP(r), Email: creator, Admin: tok.Role == enrollment.RoleAdmin}
		ctx := context.WithValue(context.WithValue(r.Context(), actorKey{}, actor), roleKey{}, tok.Role)
		next(w, r.WithContext(ctx))
	}
}

// roleFrom is the role of the API token behind the request.
func roleFrom(ctx context.Context) enrollment.Role {
	r, _ := ctx.Value(roleKey{}).(enrollment.Role)
	return r
}

func actorFrom(ctx context.Context) enrollment.Actor {
	a, _ := ctx.Value(actorKey{}).(enrollment.Actor)
	return a
}
