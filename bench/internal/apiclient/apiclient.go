// Package apiclient is the JSON API as the bench tools use it: an admin
// token, reservations, approvals.
package apiclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Client calls the API at Base with Token.
type Client struct {
	Base, Token string
	HTTP        *http.Client
}

// Do sends one request and returns the body of a 2xx answer.
func (a Client) Do(method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, a.Base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("HTTP %d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, err
}

// Get fetches path.
func (a Client) Get(path string) ([]byte, error) { return a.Do(http.MethodGet, path, nil) }

// Reserve reserves a device for user and returns its ID.
func (a Client) Reserve(user string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user": user})
	b, err := a.Do(http.MethodPost, "/api/v1/reservations", body)
	if err != nil {
		return "", err
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("reserve: %s", b)
	}
	return r.ID, nil
}

// State returns an enrollment's state.
func (a Client) State(id string) (string, error) {
	b, err := a.Get("/api/v1/enrollments/" + id)
	if err != nil {
		return "", err
	}
	var e struct {
		State string `json:"state"`
	}
	return e.State, json.Unmarshal(b, &e)
}

// Approve approves an enrollment with note.
func (a Client) Approve(id, note string) error {
	body, _ := json.Marshal(map[string]string{"note": note})
	_, err := a.Do(http.MethodPost, "/api/v1/enrollments/"+id+"/approve", body)
	return err
}
