package server

import "net/http"

// limitBody caps every request body at what limit says for its path, so
// that the one endpoint that takes large bodies (command reports) does not
// raise the bar for all others.
func limitBody(limit func(path string) int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			max := limit(r.URL.Path)
			if r.ContentLength > max {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, max)
			next.ServeHTTP(w, r)
		})
	}
}
