package ssf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// Receiver is the caller behind a receiver API token.
type Receiver struct {
	TokenID string
	Name    string
}

// Receivers authenticates receiver API tokens; any other token, or none,
// is an error.
type Receivers interface {
	Receiver(ctx context.Context, bearer string) (Receiver, error)
}

// Endpoint paths.
const (
	ConfigurationPath = "/.well-known/ssf-configuration"
	JWKSPath          = "/ssf/jwks.json"
	StreamsPath       = "/ssf/streams"
	StatusPath        = "/ssf/status"
	AddSubjectPath    = "/ssf/subjects/add"
	RemoveSubjectPath = "/ssf/subjects/remove"
	VerifyPath        = "/ssf/verify"
	PollPath          = "/ssf/poll/"
)

// Limits on what a receiver may send.
const (
	maxRequestBody    = 64 << 10
	maxStreamsPerTok  = 10
	maxDescription    = 500
	maxURL            = 2048
	maxAuthHeader     = 4096
	maxEventsInStream = 20
	maxPollEvents     = 100
	pollWait          = 10 * time.Second
	maxLongPolls      = 64
	// maxLongPollsPerStream keeps one receiver from taking every slot.
	maxLongPollsPerStream = 2
	maxSubjects           = 10_000
	maxSubjectBytes       = 2048
	// minVerificationInterval limits verification requests per stream.
	minVerificationInterval = time.Minute
)

// Routes mounts discovery, the JWKS and the stream management and poll
// endpoints.
func (t *Transmitter) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+ConfigurationPath, t.configuration)
	mux.HandleFunc("GET "+JWKSPath, t.jwks)
	mux.HandleFunc("POST "+StreamsPath, t.auth(t.createStream))
	mux.HandleFunc("GET "+StreamsPath, t.auth(t.readStream))
	mux.HandleFunc("PATCH "+StreamsPath, t.auth(t.updateStream))
	mux.HandleFunc("PUT "+StreamsPath, t.auth(t.updateStream))
	mux.HandleFunc("DELETE "+StreamsPath, t.auth(t.deleteStream))
	mux.HandleFunc("GET "+StatusPath, t.auth(t.readStatus))
	mux.HandleFunc("POST "+StatusPath, t.auth(t.updateStatus))
	mux.HandleFunc("POST "+AddSubjectPath, t.auth(t.addSubject))
	mux.HandleFunc("POST "+RemoveSubjectPath, t.auth(t.removeSubject))
	mux.HandleFunc("POST "+VerifyPath, t.auth(t.verify))
	mux.HandleFunc("POST "+PollPath+"{id}", t.auth(t.poll))
}

func (t *Transmitter) configuration(w http.ResponseWriter, _ *http.Request) {
	base := t.o.Issuer
	writeJSON(w, http.StatusOK, map[string]any{
		"spec_version":               "1_0",
		"issuer":                     base,
		"jwks_uri":                   base + JWKSPath,
		"delivery_methods_supported": []string{DeliveryPush, DeliveryPoll},
		"configuration_endpoint":     base + StreamsPath,
		"status_endpoint":            base + StatusPath,
		"add_subject_endpoint":       base + AddSubjectPath,
		"remove_subject_endpoint":    base + RemoveSubjectPath,
		"verification_endpoint":      base + VerifyPath,
		"authorization_schemes":      []map[string]string{{"spec_urn": "urn:ietf:rfc:6750"}},
		"default_subjects":           "ALL",
	})
}

func (t *Transmitter) jwks(w http.ResponseWriter, _ *http.Request) {
	set, err := t.o.Keys.JWKS()
	if err != nil {
		t.o.Logger.Error("publishing the SSF keys failed", "err", err)
		apiError(w, http.StatusServiceUnavailable, "unavailable", "keys temporarily unavailable")
		return
	}
	w.Header().Set("Cache-Control", "max-age=300")
	writeJSON(w, http.StatusOK, set)
}

type receiverKey struct{}

// auth admits a receiver token only.
func (t *Transmitter) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, secret, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ssf"`)
			apiError(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <receiver API token>")
			return
		}
		rc, err := t.o.Receivers.Receiver(r.Context(), strings.TrimSpace(secret))
		if err != nil {
			apiError(w, http.StatusUnauthorized, "unauthorized", "the token is unknown, revoked, or not a receiver token")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		next(w, r.WithContext(context.WithValue(r.Context(), receiverKey{}, rc)))
	}
}

func receiverOf(ctx context.Context) Receiver {
	rc, _ := ctx.Value(receiverKey{}).(Receiver)
	return rc
}

// ownStream loads a stream of the caller's; another receiver's stream is
// as unknown as a missing one.
func (t *Transmitter) ownStream(w http.ResponseWriter, r *http.Request, id string) (Stream, bool) {
	if id == "" {
		apiError(w, http.StatusBadRequest, "invalid_request", "stream_id is required")
		return Stream{}, false
	}
	s, err := t.o.Store.Stream(r.Context(), id)
	if err == nil && s.TokenID != receiverOf(r.Context()).TokenID {
		err = enrollment.ErrNotFound
	}
	if errors.Is(err, enrollment.ErrNotFound) {
		apiError(w, http.StatusNotFound, "not_found", "no such stream")
		return Stream{}, false
	}
	if err != nil {
		t.serverError(w, r, err)
		return Stream{}, false
	}
	return s, true
}

// streamConfig is the stream configuration of SSF §8.1.1.
type streamConfig struct {
	StreamID        string         `json:"stream_id,omitempty"`
	Iss             string         `json:"iss,omitempty"`
	Aud             string         `json:"aud,omitempty"`
	EventsSupported []string       `json:"events_supported,omitempty"`
	EventsRequested []string       `json:"events_requested"`
	EventsDelivered []string       `json:"events_delivered"`
	Delivery        deliveryConfig `json:"delivery"`
	Description     string         `json:"description,omitempty"`
	MinVerification int            `json:"min_verification_interval,omitempty"`
}

type deliveryConfig struct {
	Method              string `json:"method"`
	EndpointURL         string `json:"endpoint_url,omitempty"`
	AuthorizationHeader string `json:"authorization_header,omitempty"`
}

var supported = []string{EventCompliance, EventVerification}

func (t *Transmitter) config(s Stream) streamConfig {
	var delivered []string
	for _, e := range supported {
		if s.wants(e) {
			delivered = append(delivered, e)
		}
	}
	// The authorization header is the receiver's secret: never echoed.
	return streamConfig{StreamID: s.ID, Iss: t.o.Issuer, Aud: s.Audience, EventsSupported: supported,
		EventsRequested: nonNil(s.EventsRequested), EventsDelivered: nonNil(delivered),
		Delivery: deliveryConfig{Method: s.Method, EndpointURL: s.EndpointURL}, Description: s.Description,
		MinVerification: int(minVerificationInterval.Seconds())}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// decode reads a bounded JSON body into v.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		apiError(w, http.StatusUnsupportedMediaType, "invalid_request", "Content-Type must be application/json")
		return false
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("body over %d bytes", maxRequestBody))
			return false
		}
		apiError(w, http.StatusBadRequest, "invalid_request", "body is not the expected JSON object")
		return false
	}
	return true
}

// apply validates a receiver's configuration into s.
func (t *Transmitter) apply(s *Stream, c streamConfig) string {
	if len(c.EventsRequested) > maxEventsInStream {
		return fmt.Sprintf("at most %d events_requested", maxEventsInStream)
	}
	for _, e := range c.EventsRequested {
		if len(e) > 200 || !utf8.ValidString(e) {
			return "events_requested holds an overlong or invalid event type"
		}
	}
	if len(c.Description) > maxDescription || !utf8.ValidString(c.Description) {
		return fmt.Sprintf("description must be valid UTF-8 of at most %d bytes", maxDescription)
	}
	method := c.Delivery.Method
	if method == "" {
		method = DeliveryPoll
	}
	switch method {
	case DeliveryPush:
		if msg := t.pushURLProblem(c.Delivery.EndpointURL); msg != "" {
			return msg
		}
		if len(c.Delivery.AuthorizationHeader) > maxAuthHeader || strings.ContainsAny(c.Delivery.AuthorizationHeader, "\r\n") {
			return "delivery.authorization_header is too long or holds a line break"
		}
		s.EndpointURL, s.AuthorizationHeader = c.Delivery.EndpointURL, c.Delivery.AuthorizationHeader
	case DeliveryPoll:
		s.EndpointURL, s.AuthorizationHeader = t.o.Issuer+PollPath+s.ID, ""
	default:
		return "delivery.method must be " + DeliveryPush + " or " + DeliveryPoll
	}
	s.Method, s.EventsRequested, s.Description = method, c.EventsRequested, c.Description
	return ""
}

func (t *Transmitter) pushURLProblem(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case raw == "" || len(raw) > maxURL || err != nil || u.Host == "" || u.User != nil:
		return "delivery.endpoint_url must be an absolute URL without credentials, at most 2048 bytes"
	case u.Scheme != "https" && !(u.Scheme == "http" && t.o.AllowHTTPPush):
		return "delivery.endpoint_url must be https"
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil && !t.o.AllowPrivateEndpoints && !publicAddr(ip) {
		return "delivery.endpoint_url: " + errPrivateAddress.Error() + " (trust.ssf_allow_private_endpoints allows them)"
	}
	if strings.EqualFold(host, "localhost") && !t.o.AllowPrivateEndpoints {
		return "delivery.endpoint_url: " + errPrivateAddress.Error() + " (trust.ssf_allow_private_endpoints allows them)"
	}
	return ""
}

func (t *Transmitter) createStream(w http.ResponseWriter, r *http.Request) {
	var c streamConfig
	if !decode(w, r, &c) {
		return
	}
	rc := receiverOf(r.Context())
	now := t.o.Now()
	s := Stream{ID: enrollment.NewID(), TokenID: rc.TokenID, Audience: rc.Name, DefaultSubjects: "ALL", Status: StatusEnabled,
		CreatedAt: now, UpdatedAt: now}
	if msg := t.apply(&s, c); msg != "" {
		apiError(w, http.StatusBadRequest, "invalid_request", msg)
		return
	}
	err := t.o.Store.CreateStream(r.Context(), s, maxStreamsPerTok, t.event(r, "ssf.stream.create", s.ID, s.Method))
	if errors.Is(err, enrollment.ErrConflict) {
		apiError(w, http.StatusConflict, "conflict", fmt.Sprintf("a receiver has at most %d streams", maxStreamsPerTok))
		return
	}
	if err != nil {
		t.serverError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, t.config(s))
}

func (t *Transmitter) readStream(w http.ResponseWriter, r *http.Request) {
	if id := r.URL.Query().Get("stream_id"); id != "" {
		if s, ok := t.ownStream(w, r, id); ok {
			writeJSON(w, http.StatusOK, t.config(s))
		}
		return
	}
	streams, err := t.o.Store.Streams(r.Context(), receiverOf(r.Context()).TokenID)
	if err != nil {
		t.serverError(w, r, err)
		return
	}
	out := make([]streamConfig, 0, len(streams))
	for _, s := range streams {
		out = append(out, t.config(s))
	}
	writeJSON(w, http.StatusOK, out)
}

// streamPatch is an update: a field left out is kept by PATCH, reset by
// PUT; a field sent, even empty, is set.
type streamPatch struct {
	StreamID        string          `json:"stream_id"`
	EventsRequested *[]string       `json:"events_requested"`
	Delivery        *deliveryConfig `json:"delivery"`
	Description     *string         `json:"description"`
}

func (t *Transmitter) updateStream(w http.ResponseWriter, r *http.Request) {
	var p streamPatch
	if !decode(w, r, &p) {
		return
	}
	s, ok := t.ownStream(w, r, p.StreamID)
	if !ok {
		return
	}
	var c streamConfig
	if r.Method == http.MethodPatch {
		c = streamConfig{EventsRequested: s.EventsRequested, Description: s.Description,
			Delivery: deliveryConfig{Method: s.Method, EndpointURL: s.EndpointURL, AuthorizationHeader: s.AuthorizationHeader}}
	}
	if p.EventsRequested != nil {
		c.EventsRequested = *p.EventsRequested
	}
	if p.Description != nil {
		c.Description = *p.Description
	}
	if p.Delivery != nil {
		c.Delivery = *p.Delivery
	}
	if msg := t.apply(&s, c); msg != "" {
		apiError(w, http.StatusBadRequest, "invalid_request", msg)
		return
	}
	s.UpdatedAt = t.o.Now()
	if err := t.o.Store.UpdateStream(r.Context(), s, t.event(r, "ssf.stream.update", s.ID, s.Method)); err != nil {
		t.serverError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t.config(s))
}

func (t *Transmitter) deleteStream(w http.ResponseWriter, r *http.Request) {
	s, ok := t.ownStream(w, r, r.URL.Query().Get("stream_id"))
	if !ok {
		return
	}
	if err := t.o.Store.DeleteStream(r.Context(), s.ID, t.event(r, "ssf.stream.delete", s.ID, "")); err != nil {
		t.serverError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type streamStatus struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
}

func (t *Transmitter) readStatus(w http.ResponseWriter, r *http.Request) {
	if s, ok := t.ownStream(w, r, r.URL.Query().Get("stream_id")); ok {
		writeJSON(w, http.StatusOK, streamStatus{StreamID: s.ID, Status: s.Status, Reason: s.StatusReason})
	}
}

func (t *Transmitter) updateStatus(w http.ResponseWriter, r *http.Request) {
	var in streamStatus
	if !decode(w, r, &in) {
		return
	}
	s, ok := t.ownStream(w, r, in.StreamID)
	if !ok {
		return
	}
	switch in.Status {
	case StatusEnabled, StatusPaused, StatusDisabled:
	default:
		apiError(w, http.StatusBadRequest, "invalid_request", "status must be enabled, paused or disabled")
		return
	}
	if len(in.Reason) > maxDescription || !utf8.ValidString(in.Reason) {
		apiError(w, http.StatusBadRequest, "invalid_request", "reason is too long or not UTF-8")
		return
	}
	s.Status, s.StatusReason, s.UpdatedAt = in.Status, in.Reason, t.o.Now()
	if err := t.o.Store.UpdateStream(r.Context(), s, t.event(r, "ssf.stream.status", s.ID, in.Status)); err != nil {
		t.serverError(w, r, err)
		return
	}
	t.Kick()
	writeJSON(w, http.StatusOK, streamStatus{StreamID: s.ID, Status: s.Status, Reason: s.StatusReason})
}

type subjectRequest struct {
	StreamID string          `json:"stream_id"`
	Subject  json.RawMessage `json:"subject"`
	Verified *bool           `json:"verified,omitempty"`
}

// subjectID is a subject identifier (RFC 9493) as far as a stream's
// subjects go.
type subjectID struct {
	Format string          `json:"format"`
	Email  string          `json:"email"`
	Iss    string          `json:"iss"`
	Sub    string          `json:"sub"`
	ID     string          `json:"id"`
	Device json.RawMessage `json:"device"`
	User   json.RawMessage `json:"user"`
}

// subjectKey reads a subject identifier naming a device (its iss_sub or
// opaque ID) or a user (email); a complex subject names one of those, one
// level deep. Other formats are refused.
func (t *Transmitter) subjectKey(raw json.RawMessage) (string, error) {
	if len(raw) > maxSubjectBytes {
		return "", fmt.Errorf("subject is over %d bytes", maxSubjectBytes)
	}
	var sub subjectID
	if len(raw) == 0 || json.Unmarshal(raw, &sub) != nil {
		return "", errors.New("subject must be a subject identifier object")
	}
	if sub.Format != "complex" {
		return t.simpleSubjectKey(sub)
	}
	for _, m := range []json.RawMessage{sub.Device, sub.User} {
		if len(m) == 0 || string(m) == "null" {
			continue
		}
		var member subjectID
		if json.Unmarshal(m, &member) != nil || member.Format == "complex" {
			return "", errors.New("a complex subject's members must be simple subject identifiers")
		}
		return t.simpleSubjectKey(member)
	}
	return "", errors.New("complex subject needs a device or user member")
}

func (t *Transmitter) simpleSubjectKey(sub subjectID) (string, error) {
	switch sub.Format {
	case "email":
		if sub.Email == "" || len(sub.Email) > 320 || !strings.Contains(sub.Email, "@") {
			return "", errors.New("email subject needs an e-mail address")
		}
		return "email:" + lowerASCII(sub.Email), nil
	case "iss_sub":
		if sub.Iss != t.o.Issuer || sub.Sub == "" || len(sub.Sub) > 128 {
			return "", errors.New("iss_sub subject must name a device of this issuer")
		}
		return "device:" + sub.Sub, nil
	case "opaque":
		if sub.ID == "" || len(sub.ID) > 128 {
			return "", errors.New("opaque subject needs an id of at most 128 bytes")
		}
		return "device:" + sub.ID, nil
	}
	return "", errors.New("subject format must be email, iss_sub, opaque or complex")
}

func (t *Transmitter) subjectRequest(w http.ResponseWriter, r *http.Request) (Stream, string, string, bool) {
	var in subjectRequest
	if !decode(w, r, &in) {
		return Stream{}, "", "", false
	}
	s, ok := t.ownStream(w, r, in.StreamID)
	if !ok {
		return Stream{}, "", "", false
	}
	key, err := t.subjectKey(in.Subject)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_subject", err.Error())
		return Stream{}, "", "", false
	}
	return s, key, string(in.Subject), true
}

func (t *Transmitter) addSubject(w http.ResponseWriter, r *http.Request) {
	s, key, raw, ok := t.subjectRequest(w, r)
	if !ok {
		return
	}
	err := t.o.Store.AddSubject(r.Context(), s.ID, key, raw, maxSubjects)
	if errors.Is(err, enrollment.ErrConflict) {
		apiError(w, http.StatusConflict, "conflict", fmt.Sprintf("a stream has at most %d subjects", maxSubjects))
		return
	}
	if err != nil {
		t.serverError(w, r, err)
		return
	}
	// Adding a subject to an ALL stream changes nothing; to a NONE stream
	// it starts its events (SSF §8.1.3).
	w.WriteHeader(http.StatusOK)
}

func (t *Transmitter) removeSubject(w http.ResponseWriter, r *http.Request) {
	s, key, _, ok := t.subjectRequest(w, r)
	if !ok {
		return
	}
	if err := t.o.Store.RemoveSubject(r.Context(), s.ID, key); err != nil {
		t.serverError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (t *Transmitter) verify(w http.ResponseWriter, r *http.Request) {
	var in struct {
		StreamID string `json:"stream_id"`
		State    string `json:"state"`
	}
	if !decode(w, r, &in) {
		return
	}
	s, ok := t.ownStream(w, r, in.StreamID)
	if !ok {
		return
	}
	if len(in.State) > 256 || !utf8.ValidString(in.State) {
		apiError(w, http.StatusBadRequest, "invalid_request", "state is at most 256 bytes of UTF-8")
		return
	}
	now := t.o.Now()
	err := t.o.Store.AllowVerification(r.Context(), s.ID, now.Add(-minVerificationInterval), now)
	if errors.Is(err, enrollment.ErrConflict) {
		w.Header().Set("Retry-After", fmt.Sprint(int(minVerificationInterval.Seconds())))
		apiError(w, http.StatusTooManyRequests, "too_many_requests",
			fmt.Sprintf("at most one verification per stream every %s (min_verification_interval)", minVerificationInterval))
		return
	}
	if err != nil {
		t.serverError(w, r, err)
		return
	}
	jti := newJTI()
	ev := map[string]any{}
	if in.State != "" {
		ev["state"] = in.State
	}
	claims, err := marshalClaims(setClaims{Iss: t.o.Issuer, JTI: jti, IAT: now.Unix(), Aud: s.Audience,
		SubID: map[string]string{"format": "opaque", "id": s.ID}, Events: map[string]any{EventVerification: ev}})
	if err != nil {
		t.serverError(w, r, err)
		return
	}
	if err := t.o.Store.Enqueue(r.Context(), Outgoing{JTI: jti, StreamID: s.ID, EventID: "verify:" + jti, EventType: EventVerification,
		Claims: claims, CreatedAt: now}); err != nil {
		t.serverError(w, r, err)
		return
	}
	t.metrics.queued.Inc()
	t.Kick()
	w.WriteHeader(http.StatusNoContent)
}

// pollRequest is RFC 8936's.
type pollRequest struct {
	MaxEvents         *int                       `json:"maxEvents"`
	ReturnImmediately bool                       `json:"returnImmediately"`
	Ack               []string                   `json:"ack"`
	SetErrs           map[string]json.RawMessage `json:"setErrs"`
}

func (t *Transmitter) poll(w http.ResponseWriter, r *http.Request) {
	s, ok := t.ownStream(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	if s.Method != DeliveryPoll {
		apiError(w, http.StatusBadRequest, "invalid_request", "this stream is delivered by push")
		return
	}
	var in pollRequest
	if !decode(w, r, &in) {
		return
	}
	if len(in.Ack)+len(in.SetErrs) > 1000 {
		apiError(w, http.StatusBadRequest, "invalid_request", "at most 1000 acknowledgements per poll")
		return
	}
	now := t.o.Now()
	if len(in.Ack) > 0 {
		if err := t.o.Store.Delivered(r.Context(), s.ID, in.Ack, "", now); err != nil {
			t.serverError(w, r, err)
			return
		}
		t.metrics.acked.Add(float64(len(in.Ack)))
	}
	for jti, e := range in.SetErrs {
		if err := t.o.Store.Delivered(r.Context(), s.ID, []string{jti}, "receiver error: "+cutString(string(e), 256), now); err != nil {
			t.serverError(w, r, err)
			return
		}
	}
	max := 25
	if in.MaxEvents != nil {
		max = min(max0(*in.MaxEvents), maxPollEvents)
	}
	// Long polls are bounded per process and per stream: beyond either
	// limit a poll answers at once, as with returnImmediately.
	if !in.ReturnImmediately {
		if release, ok := t.waitSlot(s.ID); ok {
			defer release()
		} else {
			in.ReturnImmediately = true
		}
	}
	sets := map[string]string{}
	more := false
	if max > 0 && s.Status == StatusEnabled {
		deadline := time.Now().Add(pollWait)
		for {
			pending, m, err := t.o.Store.Pending(r.Context(), s.ID, max)
			if err != nil {
				t.serverError(w, r, err)
				return
			}
			for _, p := range pending {
				set, err := t.o.Keys.Sign([]byte(p.Claims))
				if err != nil {
					t.serverError(w, r, err)
					return
				}
				sets[p.JTI] = set
			}
			more = m
			if len(sets) > 0 || in.ReturnImmediately || time.Now().After(deadline) {
				break
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sets": sets, "moreAvailable": more})
}

// waitSlot reserves a long-poll slot for a stream.
func (t *Transmitter) waitSlot(streamID string) (func(), bool) {
	t.pollMu.Lock()
	defer t.pollMu.Unlock()
	if t.polling[streamID] >= maxLongPollsPerStream {
		return nil, false
	}
	select {
	case t.longPolls <- struct{}{}:
	default:
		return nil, false
	}
	t.polling[streamID]++
	return func() {
		<-t.longPolls
		t.pollMu.Lock()
		defer t.pollMu.Unlock()
		if t.polling[streamID]--; t.polling[streamID] == 0 {
			delete(t.polling, streamID)
		}
	}, true
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}

func (t *Transmitter) event(r *http.Request, action, streamID, detail string) enrollment.AuditEvent {
	rc := receiverOf(r.Context())
	return enrollment.AuditEvent{At: t.o.Now(), Actor: "receiver:" + rc.Name, Action: action, TargetType: "ssf_stream", TargetID: streamID,
		Outcome: enrollment.OutcomeOK, Detail: detail}
}

func (t *Transmitter) serverError(w http.ResponseWriter, r *http.Request, err error) {
	t.o.Logger.ErrorContext(r.Context(), "SSF request failed", "path", r.URL.Path, "err", err)
	apiError(w, http.StatusInternalServerError, "internal", "the request failed on the server's side")
}

func apiError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"err": code, "description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func readLimited(r io.Reader, n int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, n))
	return b
}

func cutString(s string, n int) string {
	s = strings.ToValidUTF8(s, "\ufffd")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func lowerASCII(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
