package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// SCIMUsers is what SCIM provisioning needs from user management.
type SCIMUsers interface {
	Add(ctx context.Context, actor enrollment.Actor, in enrollment.UserInput) (enrollment.User, error)
	SetDisabled(ctx context.Context, actor enrollment.Actor, id string, disabled bool) (enrollment.User, error)
	List(ctx context.Context) ([]enrollment.User, error)
	Get(ctx context.Context, id string) (enrollment.User, error)
	Rename(ctx context.Context, actor enrollment.Actor, id, name string) (enrollment.User, error)
}

// SCIM serves /scim/v2/Users (RFC 7643/7644) so an IdP (Okta, Entra ID)
// can push the people allowed to enroll. Deleting a user disables it:
// its history stays for the audit.
type SCIM struct {
	users     SCIMUsers
	tokenHash [32]byte
	log       *slog.Logger
}

// NewSCIM takes the bearer token the IdP presents.
func NewSCIM(users SCIMUsers, token string, log *slog.Logger) (*SCIM, error) {
	if len(token) < 32 {
		return nil, errors.New("scim: the token must be at least 32 characters")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SCIM{users: users, tokenHash: sha256.Sum256([]byte(token)), log: log}, nil
}

const (
	scimUserSchema  = "urn:ietf:params:scim:schemas:core:2.0:User"
	scimListSchema  = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	scimErrorSchema = "urn:ietf:params:scim:api:messages:2.0:Error"
	scimPatchSchema = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	scimContentType = "application/scim+json"
)

// Routes mounts the SCIM endpoints.
func (s *SCIM) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /scim/v2/Users", s.auth(s.list))
	mux.HandleFunc("POST /scim/v2/Users", s.auth(s.create))
	mux.HandleFunc("GET /scim/v2/Users/{id}", s.auth(s.get))
	mux.HandleFunc("PUT /scim/v2/Users/{id}", s.auth(s.replace))
	mux.HandleFunc("PATCH /scim/v2/Users/{id}", s.auth(s.patch))
	mux.HandleFunc("DELETE /scim/v2/Users/{id}", s.auth(s.remove))
}

var scimActor = enrollment.Actor{Name: "scim"}

func (s *SCIM) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], s.tokenHash[:]) != 1 {
			scimError(w, http.StatusUnauthorized, "", "a valid SCIM bearer token is required")
			return
		}
		a := scimActor
		a.RemoteIP = clientIP(r)
		next(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, a)))
	}
}

func scimError(w http.ResponseWriter, status int, scimType, detail string) {
	w.Header().Set("Content-Type", scimContentType)
	w.WriteHeader(status)
	body := map[string]any{"schemas": []string{scimErrorSchema}, "status": strconv.Itoa(status), "detail": detail}
	if scimType != "" {
		body["scimType"] = scimType
	}
	_ = json.NewEncoder(w).Encode(body)
}

func (s *SCIM) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, enrollment.ErrNotFound):
		scimError(w, http.StatusNotFound, "", "no such user")
	case errors.Is(err, enrollment.ErrConflict):
		scimError(w, http.StatusConflict, "uniqueness", err.Error())
	case errors.Is(err, enrollment.ErrInvalid):
		scimError(w, http.StatusBadRequest, "invalidValue", err.Error())
	default:
		s.log.ErrorContext(r.Context(), "scim", "err", err)
		scimError(w, http.StatusInternalServerError, "", "internal error")
	}
}

type scimUser struct {
	Schemas     []string `json:"schemas"`
	ID          string   `json:"id,omitempty"`
	ExternalID  string   `json:"externalId,omitempty"`
	UserName    string   `json:"userName"`
	DisplayName string   `json:"displayName,omitempty"`
	Name        *struct {
		Formatted  string `json:"formatted,omitempty"`
		GivenName  string `json:"givenName,omitempty"`
		FamilyName string `json:"familyName,omitempty"`
	} `json:"name,omitempty"`
	Active *bool `json:"active,omitempty"`
	Meta   *struct {
		ResourceType string `json:"resourceType"`
		Created      string `json:"created"`
		LastModified string `json:"lastModified"`
	} `json:"meta,omitempty"`
}

func (u scimUser) displayName() string {
	switch {
	case u.DisplayName != "":
		return u.DisplayName
	case u.Name != nil && u.Name.Formatted != "":
		return u.Name.Formatted
	case u.Name != nil:
		return strings.TrimSpace(u.Name.GivenName + " " + u.Name.FamilyName)
	}
	return ""
}

func toSCIM(u enrollment.User) scimUser {
	active := u.Enabled()
	out := scimUser{Schemas: []string{scimUserSchema}, ID: u.ID, UserName: u.Email, DisplayName: u.Name, Active: &active}
	out.Meta = &struct {
		ResourceType string `json:"resourceType"`
		Created      string `json:"created"`
		LastModified string `json:"lastModified"`
	}{"User", u.CreatedAt.Format("2006-01-02T15:04:05Z07:00"), u.UpdatedAt.Format("2006-01-02T15:04:05Z07:00")}
	return out
}

func writeSCIM(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", scimContentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func decodeSCIM(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxJSONBody))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", enrollment.ErrInvalid, err)
	}
	return nil
}

// list supports the one filter IdPs use to find a user: userName eq "x".
func (s *SCIM) list(w http.ResponseWriter, r *http.Request) {
	users, err := s.users.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if f := r.URL.Query().Get("filter"); f != "" {
		attr, rest, _ := strings.Cut(strings.TrimSpace(f), " ")
		op, val, _ := strings.Cut(strings.TrimSpace(rest), " ")
		if !strings.EqualFold(attr, "userName") || !strings.EqualFold(op, "eq") || len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
			scimError(w, http.StatusBadRequest, "invalidFilter", `only filter=userName eq "..." is supported`)
			return
		}
		want := strings.ToLower(val[1 : len(val)-1])
		var kept []enrollment.User
		for _, u := range users {
			if u.Email == want {
				kept = append(kept, u)
			}
		}
		users = kept
	}
	res := make([]scimUser, 0, len(users))
	for _, u := range users {
		res = append(res, toSCIM(u))
	}
	writeSCIM(w, http.StatusOK, map[string]any{"schemas": []string{scimListSchema}, "totalResults": len(res), "startIndex": 1,
		"itemsPerPage": len(res), "Resources": res})
}

func (s *SCIM) create(w http.ResponseWriter, r *http.Request) {
	var in scimUser
	if err := decodeSCIM(r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.users.Add(r.Context(), actorFrom(r.Context()), enrollment.UserInput{Email: in.UserName, Name: in.displayName(), Role: enrollment.RoleUser})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Active != nil && !*in.Active {
		if u, err = s.users.SetDisabled(r.Context(), actorFrom(r.Context()), u.ID, true); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	w.Header().Set("Location", "/scim/v2/Users/"+u.ID)
	writeSCIM(w, http.StatusCreated, toSCIM(u))
}

func (s *SCIM) get(w http.ResponseWriter, r *http.Request) {
	u, err := s.users.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeSCIM(w, http.StatusOK, toSCIM(u))
}

// setActive applies an active flag, ignoring "already so".
func (s *SCIM) setActive(r *http.Request, id string, active bool) (enrollment.User, error) {
	u, err := s.users.SetDisabled(r.Context(), actorFrom(r.Context()), id, !active)
	if errors.Is(err, enrollment.ErrConflict) {
		return s.users.Get(r.Context(), id)
	}
	return u, err
}

func (s *SCIM) replace(w http.ResponseWriter, r *http.Request) {
	var in scimUser
	if err := decodeSCIM(r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	u, err := s.users.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if in.UserName != "" && !strings.EqualFold(in.UserName, u.Email) {
		scimError(w, http.StatusBadRequest, "mutability", "userName (the e-mail) cannot change; create a new user")
		return
	}
	if name := in.displayName(); name != "" && name != u.Name {
		if u, err = s.users.Rename(r.Context(), actorFrom(r.Context()), id, name); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if in.Active != nil {
		if u, err = s.setActive(r, id, *in.Active); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeSCIM(w, http.StatusOK, toSCIM(u))
}

// patch supports what IdPs send: replace of active (with or without a
// path) and of displayName.
func (s *SCIM) patch(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Schemas    []string `json:"schemas"`
		Operations []struct {
			Op    string          `json:"op"`
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		} `json:"Operations"`
	}
	if err := decodeSCIM(r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	u, err := s.users.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, op := range in.Operations {
		if !strings.EqualFold(op.Op, "replace") && !strings.EqualFold(op.Op, "add") {
			scimError(w, http.StatusBadRequest, "invalidSyntax", "only replace and add operations are supported")
			return
		}
		fields := map[string]json.RawMessage{}
		if op.Path == "" {
			if err := json.Unmarshal(op.Value, &fields); err != nil {
				scimError(w, http.StatusBadRequest, "invalidValue", "a patch without a path needs an object value")
				return
			}
		} else {
			fields[op.Path] = op.Value
		}
		for path, raw := range fields {
			switch strings.ToLower(path) {
			case "active":
				var active bool
				if err := json.Unmarshal(raw, &active); err != nil {
					// Entra ID sends "True"/"False" as strings.
					var str string
					if json.Unmarshal(raw, &str) != nil {
						scimError(w, http.StatusBadRequest, "invalidValue", "active must be a boolean")
						return
					}
					active = strings.EqualFold(str, "true")
				}
				if u, err = s.setActive(r, id, active); err != nil {
					s.fail(w, r, err)
					return
				}
			case "displayname":
				var name string
				if err := json.Unmarshal(raw, &name); err != nil {
					scimError(w, http.StatusBadRequest, "invalidValue", "displayName must be a string")
					return
				}
				if u, err = s.users.Rename(r.Context(), actorFrom(r.Context()), id, name); err != nil {
					s.fail(w, r, err)
					return
				}
			default:
				// Attributes Vestibule does not keep are accepted and ignored.
			}
		}
	}
	writeSCIM(w, http.StatusOK, toSCIM(u))
}

func (s *SCIM) remove(w http.ResponseWriter, r *http.Request) {
	if _, err := s.setActive(r, r.PathValue("id"), false); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
