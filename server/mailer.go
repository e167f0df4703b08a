package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/smtp"
	"strings"
	"sync"
	"time"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// ownerMailer tells the person a device enrolled in their name (seed 002:
// an account owner learns of every new device), with the way to say it was
// not them.
type ownerMailer struct {
	cfg      config.SMTP
	password string
	portal   string
	org      string
	log      *slog.Logger
	wg       sync.WaitGroup
}

// Pending mails the owner without holding up the device's check-in.
func (m *ownerMailer) Pending(e enrollment.Enrollment) {
	device := strings.TrimSpace(e.Facts.ModelName + " " + e.Facts.Model)
	var b strings.Builder
	fmt.Fprintf(&b, "A device was enrolled in your name at %s and is waiting for an administrator's approval.\r\n\r\n", m.org)
	fmt.Fprintf(&b, "Device: %s\r\nSerial number: %s\r\nWhen: %s\r\n\r\n", device, e.Facts.Serial, e.CreatedAt.Format(time.RFC1123))
	fmt.Fprintf(&b, "If this was you, there is nothing to do.\r\nIf it was not, open %s/portal and choose \"This wasn't me\": the device will be refused and your administrators told.\r\n", m.portal)
	m.deliver(e, "A device enrolled in your name at "+m.org, b.String())
}

// Retired mails the owner that an approver retired their device.
func (m *ownerMailer) Retired(e enrollment.Enrollment, reason string) {
	device := strings.TrimSpace(e.Facts.ModelName + " " + e.Facts.Model)
	var b strings.Builder
	fmt.Fprintf(&b, "An administrator at %s retired a device enrolled in your name: it no longer has access.\r\n\r\n", m.org)
	fmt.Fprintf(&b, "Device: %s\r\nSerial number: %s\r\nReason given: %s\r\n\r\n", device, e.Facts.Serial, reason)
	fmt.Fprintf(&b, "If you still use this device, contact your administrators. Your devices are listed at %s/portal.\r\n", m.portal)
	m.deliver(e, "A device of yours was retired at "+m.org, b.String())
}

// deliver sends in the background with a few retries.
func (m *ownerMailer) deliver(e enrollment.Enrollment, subject, text string) {
	if e.UserEmail == "" {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for attempt := range 3 {
			err := m.send(e.UserEmail, subject, text)
			if err == nil {
				return
			}
			m.log.Warn("owner notification mail", "attempt", attempt+1, "err", err)
			time.Sleep(time.Duration(attempt+1) * 2 * time.Second)
		}
		m.log.Error("owner notification mail given up", "enrollment", e.ID)
	}()
}

// Wait lets tests and shutdown see deliveries through.
func (m *ownerMailer) Wait() { m.wg.Wait() }

func (m *ownerMailer) send(to, subject, text string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		m.cfg.From, to, mime.QEncoding.Encode("utf-8", subject), time.Now().Format(time.RFC1123Z))
	b.WriteString(text)
	var auth smtp.Auth
	if m.cfg.Username != "" {
		auth = smtp.PlainAuth("", m.cfg.Username, m.password, m.cfg.Host)
	}
	addr := net.JoinHostPort(m.cfg.Host, fmt.Sprint(m.cfg.Port))
	// smtp.SendMail upgrades with STARTTLS when the server offers it and
	// refuses PLAIN auth over an unencrypted link except to localhost.
	return smtp.SendMail(addr, auth, m.cfg.From, []string{to}, b.Bytes())
}

// notifiers fans a pending enrollment out to every configured channel.
type notifiers []enrollment.Notifier

func (n notifiers) Pending(e enrollment.Enrollment) {
	for _, x := range n {
		x.Pending(e)
	}
}

// Retired reaches the channels that tell owners.
func (n notifiers) Retired(e enrollment.Enrollment, reason string) {
	for _, x := range n {
		if r, ok := x.(enrollment.RetireNotifier); ok {
			r.Retired(e, reason)
		}
	}
}
