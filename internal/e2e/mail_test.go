package e2e

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/vestibule-mdm/vestibule/config"
)

// mailbox is a real SMTP server (emersion/go-smtp) keeping what it gets.
type mailbox struct {
	mu   sync.Mutex
	msgs []string
	rcpt []string
}

func (m *mailbox) NewSession(*smtp.Conn) (smtp.Session, error) { return &mailSession{m: m}, nil }

type mailSession struct{ m *mailbox }

func (s *mailSession) Reset()                               {}
func (s *mailSession) Logout() error                        { return nil }
func (s *mailSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.m.mu.Lock()
	s.m.rcpt = append(s.m.rcpt, to)
	s.m.mu.Unlock()
	return nil
}
func (s *mailSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, string(b))
	s.m.mu.Unlock()
	return nil
}

// startMailbox runs a real SMTP server on loopback that keeps what it is
// sent, and returns it with its port.
func startMailbox(t *testing.T) (*mailbox, int) {
	t.Helper()
	box := &mailbox{}
	srv := smtp.NewServer(box)
	srv.Domain = "localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return box, ln.Addr().(*net.TCPAddr).Port
}

// TestOwnerIsMailed: when a device enrolls in a user's name, the user gets
// an e-mail with the device and the way to say it was not them.
func TestOwnerIsMailed(t *testing.T) {
	box, port := startMailbox(t)
	e := newEnv(t, "sqlite", func(c *config.Config) {
		c.SMTP = config.SMTP{Host: "127.0.0.1", Port: port, From: "vestibule@example.com"}
	})
	d, _ := e.enrolledDevice("alice@example.com", "C02MAILED001")
	if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	e.app.Mailer.Wait()
	box.mu.Lock()
	defer box.mu.Unlock()
	if len(box.msgs) != 1 || box.rcpt[0] != "alice@example.com" {
		t.Fatalf("mails: %d to %v", len(box.msgs), box.rcpt)
	}
	for _, want := range []string{"C02MAILED001", "/portal", "This wasn't me", "waiting for an administrator"} {
		if !strings.Contains(box.msgs[0], want) {
			t.Errorf("the mail lacks %q:\n%s", want, box.msgs[0])
		}
	}
}
