package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

// enrollmentJSON is the CLI's JSON shape of an enrollment.
type enrollmentJSON struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	DeviceID  string    `json:"device_id"`
	UDID      string    `json:"udid"`
	Serial    string    `json:"serial"`
	Model     string    `json:"model"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
	Flags     []string  `json:"flags"`
	Previous  string    `json:"previous_id,omitempty"`
	Conflict  string    `json:"conflict_with,omitempty"`
	// Attestation is what Apple's hardware attestation vouched for.
	Attestation enrollment.Attestation `json:"attestation"`
	DecidedBy   string                 `json:"decided_by,omitempty"`
	Note        string                 `json:"decision_note,omitempty"`
}

func toJSON(e enrollment.Enrollment) enrollmentJSON {
	flags := e.Flags()
	if flags == nil {
		flags = []string{}
	}
	return enrollmentJSON{ID: e.ID, State: string(e.State), DeviceID: e.ID, UDID: e.Facts.UDID, Serial: e.Facts.Serial,
		Model: e.Facts.Model, User: e.UserEmail, CreatedAt: e.CreatedAt, Flags: flags, Previous: e.PreviousID,
		Conflict: e.ConflictID, Attestation: e.Attestation, DecidedBy: e.DecidedBy, Note: e.DecisionNote}
}

func (a *app) enrollmentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "enrollments",
		Aliases: []string{"enrollment"},
		Short:   "List, inspect, approve and deny device enrollments",
	}
	var state string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--state pending|approved|denied|superseded|unenrolled] [--json]",
		Short: "List enrollments, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := enrollment.ParseState(state)
			if err != nil {
				return err
			}
			return a.withCore(cmd.Context(), func(app *server.App) error {
				list, err := app.Enrollments.List(cmd.Context(), enrollment.EnrollmentFilter{State: st})
				if err != nil {
					return err
				}
				if asJSON {
					out := make([]enrollmentJSON, len(list))
					for i, e := range list {
						out[i] = toJSON(e)
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATE\tUSER\tSERIAL\tMODEL\tCREATED\tFLAGS")
				for _, e := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.State, e.UserEmail, e.Facts.Serial, e.Facts.Model,
						e.CreatedAt.Local().Format("2006-01-02 15:04"), strings.Join(e.Flags(), ","))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&state, "state", "", "only enrollments in this state")
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one enrollment (ID: the device ID, a unique prefix of 8 or more characters, or the UDID)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				printEnrollment(a.out, e)
				return nil
			})
		},
	}

	var note, as string
	var selfApproval bool
	approve := &cobra.Command{
		Use:   "approve ID [--note TEXT] [--as EMAIL [--self-approval]]",
		Short: "Approve a pending enrollment: its post-approval commands are queued",
		Long: `Approve a pending enrollment: its post-approval commands are queued.

--as names the person approving (recorded in the audit log). Nobody approves
an enrollment made in their own name: the console and the API refuse it, and
so does this command unless --self-approval is given, in which case the
approval is audited as enrollment.self_approve.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			actor := cliActor()
			// The command line holds the server's store and keys: it acts
			// as an admin, so approval.require_attestation lets it approve an
			// unattested device with a --note, audited as such.
			actor.Email, actor.SelfApproval, actor.Admin = as, selfApproval, true
			if as != "" {
				actor.Name += " as " + as
			}
			if selfApproval && as == "" {
				return fmt.Errorf("--self-approval needs --as EMAIL: the person approving their own enrollment")
			}
			return a.withCore(cmd.Context(), func(app *server.App) error {
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				e, err = app.Enrollments.Approve(cmd.Context(), actor, e.ID, note)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "approved %s (%s, serial %s)\n", e.ID, e.UserEmail, e.Facts.Serial)
				return nil
			})
		},
	}
	approve.Flags().StringVar(&note, "note", "", "why, for the audit log")
	approve.Flags().StringVar(&as, "as", "", "e-mail of the person approving, for the audit log")
	approve.Flags().BoolVar(&selfApproval, "self-approval", false, "let --as approve an enrollment made in their own name (audited as a self-approval)")

	var reason string
	// deny and revoke are one decision in two words, as in the console:
	// each refuses the other's state, so a mistaken ID does not revoke an
	// approved device.
	decide := func(verb, past string, from enrollment.State) func(cmd *cobra.Command, args []string) error {
		return func(cmd *cobra.Command, args []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if e.State != from {
					return fmt.Errorf("%s is %s: only a %s enrollment can be %s%s", e.ID, e.State, from, past, map[bool]string{
						true: " (use `enrollments revoke` for an approved one)", false: ""}[verb == "deny" && e.State == enrollment.StateApproved])
				}
				if e, err = app.Enrollments.Deny(cmd.Context(), cliActor(), e.ID, reason); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "%s %s (%s, serial %s)\n", past, e.ID, e.UserEmail, e.Facts.Serial)
				return nil
			})
		}
	}
	deny := &cobra.Command{
		Use:   "deny ID --reason TEXT",
		Short: "Deny a pending enrollment: its certificates are revoked and the device is refused",
		Args:  cobra.ExactArgs(1),
		RunE:  decide("deny", "denied", enrollment.StatePending),
	}
	deny.Flags().StringVar(&reason, "reason", "", "why (required, for the audit log)")
	_ = deny.MarkFlagRequired("reason")
	revoke := &cobra.Command{
		Use:   "revoke ID --reason TEXT",
		Short: "Revoke an approved enrollment: its certificates are revoked, device trust ends, the device is refused",
		Args:  cobra.ExactArgs(1),
		RunE:  decide("revoke", "revoked", enrollment.StateApproved),
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (required, for the audit log)")
	_ = revoke.MarkFlagRequired("reason")

	var retireReason string
	retire := &cobra.Command{
		Use:   "retire ID --reason TEXT",
		Short: "Retire an enrollment whose device changed hands: superseded, certificates revoked, owner told",
		Long: `Retire an enrollment whose device changed hands. Approving an enrollment that
claims another user's device never touches that user's enrollment; an
approver who decides the device really changed hands retires the old
enrollment with this command, as a separate, audited action. The old owner
is notified (portal, and e-mail when smtp.host is set).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				e, err = app.Enrollments.Retire(cmd.Context(), cliActor(), e.ID, retireReason)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "retired %s (%s, serial %s)\n", e.ID, e.UserEmail, e.Facts.Serial)
				return nil
			})
		},
	}
	retire.Flags().StringVar(&retireReason, "reason", "", "why the device changed hands (required, for the audit log)")
	_ = retire.MarkFlagRequired("reason")
	cmd.AddCommand(list, show, approve, deny, revoke, retire)
	return cmd
}

// attestationLine says in one line what Apple's attestation vouched for.
func attestationLine(a enrollment.Attestation) string {
	switch {
	case a.Attested():
		return fmt.Sprintf("attested by Apple (%s): serial %s, UDID %s, OS %s", a.Status, a.Serial, a.UDID, a.OSVersion)
	case a.Status == enrollment.AttestNotAsked:
		return "not asked"
	}
	return strings.TrimSpace(fmt.Sprintf("not attested: %s %s", a.Status, a.Reason))
}

func printEnrollment(w io.Writer, e enrollment.Enrollment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("Device ID", e.ID)
	row("State", string(e.State))
	row("Flags", strings.Join(e.Flags(), ", "))
	row("Previous enrollment", e.PreviousID)
	row("Claims the device of", e.ConflictID)
	row("Attestation", attestationLine(e.Attestation))
	row("User", e.UserEmail)
	row("UDID", e.Facts.UDID)
	row("Serial", e.Facts.Serial)
	row("Model", strings.TrimSpace(e.Facts.ModelName+" "+e.Facts.Model))
	row("Product", e.Facts.ProductName)
	row("OS", strings.TrimSpace(e.Facts.OSVersion+" "+e.Facts.BuildVersion))
	row("IMEI", e.Facts.IMEI)
	row("MEID", e.Facts.MEID)
	row("Device name", e.Facts.DeviceName)
	row("Checked in from", e.CheckinIP)
	row("Created", e.CreatedAt.Local().Format(time.RFC1123))
	if e.DecidedAt != nil {
		row("Decided", e.DecidedAt.Local().Format(time.RFC1123)+" by "+e.DecidedBy)
	}
	row("Note", e.DecisionNote)
	if e.LastSeenAt != nil {
		row("Last seen", e.LastSeenAt.Local().Format(time.RFC1123))
	}
	push := "no"
	if e.PushToken != "" {
		push = "yes (topic " + e.PushTopic + ")"
	}
	row("Push token", push)
	_ = tw.Flush()
}
