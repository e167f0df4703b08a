package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
)

// console is an admin in the web console. Every request goes to the next
// replica, so the session made by one sign-in has to hold on all of them.
type console struct {
	base     string
	http     *http.Client
	requests atomic.Int64
	refused  atomic.Int64 // sent back to sign-in: a replica did not know the session
}

var passwordLine = regexp.MustCompile(`Password:\s+(\S+)`)

// signIn signs in as the development admin with the password the replica
// started last printed.
func (s *soak) signIn(base string, last *replica) (*console, error) {
	b, err := os.ReadFile(s.logFile(last))
	if err != nil {
		return nil, err
	}
	m := passwordLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return nil, fmt.Errorf("replica %d printed no admin password", last.i)
	}
	password := string(m[len(m)-1][1])
	jar, _ := cookiejar.New(nil)
	c := &console{base: base, http: &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &spread{s: s, next: http.DefaultTransport},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	resp, err := c.http.PostForm(base+"/login", url.Values{"email": {"admin@localhost"}, "password": {password}, "next": {"/console/pending"}})
	if err != nil {
		return nil, fmt.Errorf("sign in: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), "/login") {
		return nil, fmt.Errorf("sign in: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return c, nil
}

// approve approves an enrollment with the console's form, after opening the
// pending queue, as an admin does.
func (c *console) approve(id string) error {
	if err := c.do(http.MethodGet, "/console/pending", nil); err != nil {
		return err
	}
	return c.do(http.MethodPost, "/console/enrollments/"+id+"/approve", url.Values{"note": {"soak, from the console"}})
}

func (c *console) do(method, path string, form url.Values) error {
	c.requests.Add(1)
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	loc := resp.Header.Get("Location")
	switch {
	case resp.StatusCode == http.StatusUnauthorized || strings.HasPrefix(loc, "/login"):
		c.refused.Add(1)
		return fmt.Errorf("%s %s: the replica sent the admin back to sign in", method, path)
	case resp.StatusCode >= 400:
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return nil
}
