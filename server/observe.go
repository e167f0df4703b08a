package server

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/internal/clientaddr"
)

// httpMetrics are the request counters and latencies by route.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vestibule_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vestibule_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vestibule_http_requests_in_flight", Help: "HTTP requests being served.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// statusRecorder remembers what the handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// observe logs and measures each request. It sits right around the mux: the
// mux records the matched pattern on the request it is given, and that
// pattern, not the raw path, labels the metrics so IDs in paths cannot blow
// up their cardinality. The query string is never logged: the check-in URL
// carries the enrollment token there.
//
// On the quiet routes a request answered below 400 is logged at debug:
// devices' check-ins are nearly all of a fleet's requests, the metrics
// count them, and writing a line for each cost the server a twelfth of its
// CPU per idle check-in (pprof under bench/load). Refusals and failures
// there are still logged at info and above, by this and by the handler.
func observe(log *slog.Logger, m *httpMetrics, quiet map[string]bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w}
			m.inflight.Inc()
			defer m.inflight.Dec()
			next.ServeHTTP(rec, r)
			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			elapsed := time.Since(start)
			method := methodLabel(r.Method)
			m.requests.WithLabelValues(route, method, statusLabel(rec.status)).Inc()
			m.duration.WithLabelValues(route, method).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			switch {
			case rec.status >= 500:
				level = slog.LevelError
			case rec.status < 400 && quiet[route]:
				level = slog.LevelDebug
			}
			if !log.Enabled(r.Context(), level) {
				return
			}
			log.LogAttrs(r.Context(), level, "http request",
				slog.String("request_id", RequestIDFrom(r.Context())),
				slog.String("method", method), slog.String("path", truncate(r.URL.Path, 256)), slog.String("route", route),
				slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
				slog.Duration("duration", elapsed), slog.String("remote_ip", remoteIP(r)))
		})
	}
}

// remoteIP is the client's address, through the trusted proxies
// (clientaddr.Middleware runs before this).
func remoteIP(r *http.Request) string { return clientaddr.Of(r) }

// methodLabel bounds the method label to the methods HTTP defines: any
// client may send any token as a method, and every new label value is a new
// time series kept for the life of the process.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// statusLabel keeps the code label to the codes HTTP defines.
func statusLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}

// truncate shortens what a client controls before it is logged.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
