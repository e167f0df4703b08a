package web

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/vestibule-mdm/vestibule/depsync"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// depRoutes serve Setup Assistant on a DEP device: the DEP profile's
// configuration_web_url. The device-info header only says which device is
// asking; the person still signs in at the IdP, and the device still waits
// for approval.
func (c *Portal) depRoutes(cm *http.ServeMux) {
	cm.HandleFunc("GET /dep/enroll", c.depEnroll)
	cm.HandleFunc("GET /dep/continue", c.depContinue)
	cm.HandleFunc("POST /dep/profile", c.need(enrollment.RoleUser, c.depProfile))
}

func (c *Portal) depEnroll(w http.ResponseWriter, r *http.Request) {
	info, err := depsync.ParseDeviceInfoHeader(r.Header.Get(depsync.DeviceInfoHeader))
	if err != nil {
		c.log.WarnContext(r.Context(), "DEP enrollment without a readable device-info header", "err", err, "remote_ip", clientIP(r))
		c.fail(w, r, enrollment.User{}, http.StatusBadRequest, "Cannot set up this device here",
			"Open this page from Setup Assistant on the device you are setting up.")
		return
	}
	c.renderDEP(w, r, enrollment.User{}, info)
}

func depNext(info depsync.DeviceInfo) string {
	return "/dep/continue?" + url.Values{"serial": {info.Serial}, "udid": {info.UDID}, "product": {info.Product}}.Encode()
}

func (c *Portal) renderDEP(w http.ResponseWriter, r *http.Request, u enrollment.User, info depsync.DeviceInfo) {
	login := "/auth/login?" + url.Values{"next": {depNext(info)}}.Encode()
	c.renderPortal(w, r, u, http.StatusOK, map[string]any{"Info": info, "Login": login}, "dep")
}

// depContinue is where the IdP sign-in comes back to: the claims travel in
// the query, as claims.
func (c *Portal) depContinue(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	info := depsync.DeviceInfo{Serial: q.Get("serial"), UDID: q.Get("udid"), Product: q.Get("product")}
	if info.Serial == "" || len(info.Serial) > 64 || len(info.UDID) > 64 {
		c.fail(w, r, enrollment.User{}, http.StatusBadRequest, "Cannot set up this device here", "Start again from Setup Assistant.")
		return
	}
	cookie, err := r.Cookie(SessionCookie)
	var u enrollment.User
	if err == nil {
		_, u, err = c.o.Sessions.Check(r.Context(), cookie.Value)
	}
	if err != nil {
		u = enrollment.User{}
	}
	c.renderDEP(w, r, u, info)
}

func (c *Portal) depProfile(w http.ResponseWriter, r *http.Request) {
	u := me(r)
	res, sec, err := c.o.Portal.ReserveForDEP(r.Context(), actor(r), u, c.o.ReservationsPerHour, r.PostFormValue("serial"), r.PostFormValue("udid"))
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, enrollment.ErrRateLimited) {
			status = http.StatusTooManyRequests
		}
		c.fail(w, r, u, status, "Cannot enroll", userMessage(err))
		return
	}
	body, err := c.o.Profiles.MakeProfile(r.Context(), res, sec)
	if err != nil {
		c.log.ErrorContext(r.Context(), "make profile", "err", err)
		c.fail(w, r, u, http.StatusInternalServerError, "Cannot enroll", "the profile could not be made; try again")
		return
	}
	WriteProfile(w, res.ID, body)
}
