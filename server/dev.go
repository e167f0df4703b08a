package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// DevAdminEmail is the local admin account `serve --dev` creates.
const DevAdminEmail = "admin@localhost"

// EnsureDevAdmin creates the development admin, or gives it a new password
// if it exists, and returns the password. Each start prints a fresh one, so a
// password seen in an old terminal is worthless.
func EnsureDevAdmin(ctx context.Context, st *store.Store) (string, error) {
	// A random one-time password: the fast hash, not 64 MiB of argon2id
	// at every start.
	password, hash, err := auth.NewRandomPassword()
	if err != nil {
		return "", fmt.Errorf("dev admin: %w", err)
	}
	actor := enrollment.Actor{Name: "system:dev"}
	u, err := st.UserByEmail(ctx, DevAdminEmail)
	switch {
	case errors.Is(err, enrollment.ErrNotFound):
		users := enrollment.NewUsers(st, nil)
		u, err = users.Add(ctx, actor, enrollment.UserInput{Email: DevAdminEmail, Name: "Development admin", Role: enrollment.RoleAdmin})
		if err != nil {
			return "", fmt.Errorf("dev admin: %w", err)
		}
	case err != nil:
		return "", fmt.Errorf("dev admin: %w", err)
	case u.Role != enrollment.RoleAdmin:
		return "", fmt.Errorf("dev admin: %s exists without the admin role", DevAdminEmail)
	}
	ev := enrollment.AuditEvent{At: time.Now(), Actor: actor.Name, Action: "user.password.reset", TargetType: "user", TargetID: u.ID, Detail: "dev start"}
	if err := st.SetUserPassword(ctx, u.ID, hash, ev); err != nil {
		return "", fmt.Errorf("dev admin: %w", err)
	}
	return password, nil
}
