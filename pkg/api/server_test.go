package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/console"
)

type fakeController struct {
	calls []string
	ready bool
}

func (f *fakeController) Status() Status        { return Status{Version: "test"} }
func (f *fakeController) Ready() (bool, string) { return f.ready, "prometheus has not answered yet" }
func (f *fakeController) Rollback(_ context.Context, r ActionRequest) (ActionResult, error) {
	f.calls = append(f.calls, "rollback "+r.Target+" "+r.Action+" "+r.Reason)
	if r.Target != "pggit-api" {
		return ActionResult{}, ErrUnknownTarget
	}
	return ActionResult{Target: r.Target, Action: r.Action, Accepted: true}, nil
}
func (f *fakeController) SetFreeze(_ context.Context, t string, frozen bool, reason string) error {
	f.calls = append(f.calls, "freeze "+t)
	return nil
}
func (f *fakeController) Alerts(_ context.Context, reqs []alertmanager.Request) ([]ActionResult, error) {
	for _, r := range reqs {
		f.calls = append(f.calls, "alert "+r.Target+" "+r.Action)
	}
	return nil, nil
}
func (f *fakeController) Reload(context.Context) error {
	f.calls = append(f.calls, "reload")
	return nil
}
func (f *fakeController) AlertOptions() alertmanager.Options {
	return alertmanager.Options{Targets: map[string]bool{"pggit-api": true}, Actions: map[string]bool{"rollback": true}, DefaultAction: "rollback"}
}

func TestAuthAndRoutes(t *testing.T) {
	const token = "s3cret-token"
	alert := `{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"pggit-api"}}]}`
	tests := []struct {
		name      string
		token     string // configured
		method    string
		path      string
		auth      string
		body      string
		wantCode  int
		wantBody  string
		wantCalls string
	}{
		{name: "healthz", token: token, method: "GET", path: "/healthz", wantCode: 200, wantBody: "ok"},
		{name: "readyz not ready", token: token, method: "GET", path: "/readyz", wantCode: 503, wantBody: "not ready: prometheus has not answered yet"},
		{name: "status is public", token: token, method: "GET", path: "/api/v1/status", wantCode: 200, wantBody: `"version": "test"`},
		{name: "rollback without token", token: token, method: "POST", path: "/api/v1/targets/pggit-api/rollback", body: `{"reason":"x"}`, wantCode: 401, wantBody: "missing bearer token"},
		{name: "rollback wrong token", token: token, method: "POST", path: "/api/v1/targets/pggit-api/rollback", auth: "Bearer nope", body: `{"reason":"x"}`, wantCode: 403, wantBody: "wrong bearer token"},
		{name: "rollback basic auth is not bearer", token: token, method: "POST", path: "/api/v1/targets/pggit-api/rollback", auth: "Basic " + token, body: `{"reason":"x"}`, wantCode: 401},
		{name: "no token configured disables writes", token: "", method: "POST", path: "/-/reload", auth: "Bearer " + token, wantCode: 403, wantBody: "no API token configured"},
		{name: "rollback accepted", token: token, method: "POST", path: "/api/v1/targets/pggit-api/rollback", auth: "Bearer " + token, body: `{"reason":"CVE","action":"rollback"}`, wantCode: 202, wantCalls: "rollback pggit-api rollback CVE"},
		{name: "rollback unknown target", token: token, method: "POST", path: "/api/v1/targets/kube-dns/rollback", auth: "Bearer " + token, body: `{"reason":"x"}`, wantCode: 404, wantCalls: "rollback kube-dns  x"},
		{name: "rollback needs a reason", token: token, method: "POST", path: "/api/v1/targets/pggit-api/rollback", auth: "Bearer " + token, body: `{"reason":" "}`, wantCode: 400, wantBody: "reason: must not be empty"},
		{name: "rollback unknown field", token: token, method: "POST", path: "/api/v1/targets/pggit-api/rollback", auth: "Bearer " + token, body: `{"reason":"x","namespace":"kube-system"}`, wantCode: 400, wantBody: "unknown field"},
		{name: "freeze", token: token, method: "POST", path: "/api/v1/targets/pggit-api/freeze", auth: "Bearer " + token, body: `{"reason":"migration"}`, wantCode: 200, wantCalls: "freeze pggit-api"},
		{name: "alertmanager unauthenticated", token: token, method: "POST", path: "/api/v1/alerts/alertmanager", body: alert, wantCode: 401},
		{name: "alertmanager", token: token, method: "POST", path: "/api/v1/alerts/alertmanager", auth: "Bearer " + token, body: alert, wantCode: 200, wantCalls: "alert pggit-api rollback"},
		{name: "alertmanager malformed", token: token, method: "POST", path: "/api/v1/alerts/alertmanager", auth: "Bearer " + token, body: `{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"other"}}]}`, wantCode: 400, wantBody: "not a configured target"},
		{name: "reload", token: token, method: "POST", path: "/-/reload", auth: "Bearer " + token, wantCode: 200, wantCalls: "reload"},
		{name: "reload by GET not allowed", token: token, method: "GET", path: "/-/reload", auth: "Bearer " + token, wantCode: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeController{}
			h := NewHandler(c, Options{Token: []byte(tt.token)}, zap.NewNop())
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("body %q does not contain %q", rec.Body, tt.wantBody)
			}
			if got := strings.Join(c.calls, ";"); got != tt.wantCalls {
				t.Fatalf("controller calls = %q, want %q", got, tt.wantCalls)
			}
		})
	}
}

func TestClient(t *testing.T) {
	c := &fakeController{ready: true}
	srv := httptest.NewServer(NewHandler(c, Options{Token: []byte("tok")}, zap.NewNop()))
	defer srv.Close()
	cl := &Client{BaseURL: srv.URL, Token: "tok"}
	ctx := context.Background()
	if s, err := cl.Status(ctx); err != nil || s.Version != "test" {
		t.Fatalf("status = %+v, %v", s, err)
	}
	if res, err := cl.Rollback(ctx, "pggit-api", "rollback", "manual"); err != nil || !res.Accepted {
		t.Fatalf("rollback = %+v, %v", res, err)
	}
	if _, err := cl.Rollback(ctx, "nope", "rollback", "manual"); err == nil || !strings.Contains(err.Error(), "404 Not Found: unknown target") {
		t.Fatalf("err = %v", err)
	}
	bad := &Client{BaseURL: srv.URL, Token: "wrong"}
	if err := bad.Freeze(ctx, "pggit-api", true, "x"); err == nil || !strings.Contains(err.Error(), "403 Forbidden: wrong bearer token") {
		t.Fatalf("err = %v", err)
	}
	_ = http.StatusOK
}

// Every response of the listener carries the console's security headers,
// and the console gets what the API does not route.
func TestSecurityHeadersAndConsoleMount(t *testing.T) {
	consoleHit := false
	page := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { consoleHit = true; io.WriteString(w, "console") })
	for _, withConsole := range []bool{false, true} {
		o := Options{Token: []byte("tok")}
		if withConsole {
			o.Console = page
		}
		h := NewHandler(&fakeController{ready: true}, o, zap.NewNop())
		for _, tc := range []struct {
			method, path string
			code         int
		}{
			{"GET", "/healthz", 200},
			{"GET", "/api/v1/status", 200},
			{"POST", "/api/v1/targets/x/freeze", 401},
			{"GET", "/", map[bool]int{false: 404, true: 200}[withConsole]},
		} {
			consoleHit = false
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.code {
				t.Errorf("console %v: %s %s: %d, want %d", withConsole, tc.method, tc.path, rec.Code, tc.code)
			}
			if got := rec.Header().Get("Content-Security-Policy"); got != console.ContentSecurityPolicy {
				t.Errorf("console %v: %s %s: Content-Security-Policy %q", withConsole, tc.method, tc.path, got)
			}
			if rec.Header().Get("X-Content-Type-Options") != "nosniff" || rec.Header().Get("X-Frame-Options") != "DENY" {
				t.Errorf("console %v: %s %s: headers %v", withConsole, tc.method, tc.path, rec.Header())
			}
			if consoleHit != (withConsole && tc.path == "/") {
				t.Errorf("console %v: %s %s reached the console: %v", withConsole, tc.method, tc.path, consoleHit)
			}
		}
	}
}
