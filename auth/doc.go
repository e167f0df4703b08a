// Package auth owns who a person is: local account passwords, sign-in
// sessions, CSRF, API tokens and roles. The IdP (OIDC) sign-in plugs into
// the same session layer.
package auth
