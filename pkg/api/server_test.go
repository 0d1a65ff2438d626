package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/api/apitest"
	"github.com/rollguard/rollguard/pkg/console"
)

// controller answers as a daemon with one target, pggit-api, that is not
// ready yet.
func controller() *apitest.Controller {
	return &apitest.Controller{
		State:    api.Status{Version: "test"},
		NotReady: "prometheus has not answered yet",
		Targets:  map[string]apitest.Answer{"pggit-api": {}},
		Alerting: alertmanager.Options{Targets: map[string]bool{"pggit-api": true}, Actions: map[string]bool{"rollback": true}, DefaultAction: "rollback"},
	}
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
		{name: "alertmanager malformed", token: token, method: "POST", path: "/api/v1/alerts/alertmanager", auth: "Bearer " + token, body: `{"version":"4","alerts":[{"status":"pending"}]}`, wantCode: 400, wantBody: "want firing or resolved"},
		{name: "alertmanager only unknown targets", token: token, method: "POST", path: "/api/v1/alerts/alertmanager", auth: "Bearer " + token, body: `{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"other"}}]}`, wantCode: 400, wantBody: "not a configured target", wantCalls: "rejected other"},
		{name: "alertmanager unknown target beside a valid alert", token: token, method: "POST", path: "/api/v1/alerts/alertmanager", auth: "Bearer " + token,
			body:     `{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"other"}},{"status":"firing","labels":{"rollguard_target":"pggit-api"}}]}`,
			wantCode: 200, wantBody: `"rejected": true`, wantCalls: "alert pggit-api rollback;rejected other"},
		{name: "reload", token: token, method: "POST", path: "/-/reload", auth: "Bearer " + token, wantCode: 200, wantCalls: "reload"},
		{name: "reload by GET not allowed", token: token, method: "GET", path: "/-/reload", auth: "Bearer " + token, wantCode: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := controller()
			h := api.NewHandler(c, api.Options{Token: []byte(tt.token)}, zap.NewNop())
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
			if got := strings.Join(c.Calls(), ";"); got != tt.wantCalls {
				t.Fatalf("controller calls = %q, want %q", got, tt.wantCalls)
			}
		})
	}
}

func TestClient(t *testing.T) {
	c := controller()
	c.IsReady = true
	srv := httptest.NewServer(api.NewHandler(c, api.Options{Token: []byte("tok")}, zap.NewNop()))
	defer srv.Close()
	cl := &api.Client{BaseURL: srv.URL, Token: "tok"}
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
	bad := &api.Client{BaseURL: srv.URL, Token: "wrong"}
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
		o := api.Options{Token: []byte("tok")}
		if withConsole {
			o.Console = page
		}
		ready := controller()
		ready.IsReady = true
		h := api.NewHandler(ready, o, zap.NewNop())
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

func TestNamedTokens(t *testing.T) {
	c := controller()
	h := api.NewHandler(c, api.Options{Tokens: []api.Token{{Name: "alice", Secret: []byte("tok-a")}, {Name: "bob", Secret: []byte("tok-b")}}}, zap.NewNop())
	for _, tok := range []string{"tok-b", "tok-a", "tok-c"} {
		req := httptest.NewRequest("POST", "/api/v1/targets/pggit-api/rollback", strings.NewReader(`{"reason":"CVE"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if want := map[string]int{"tok-a": 202, "tok-b": 202, "tok-c": 403}[tok]; rec.Code != want {
			t.Errorf("token %s: %d, want %d", tok, rec.Code, want)
		}
	}
	if got := strings.Join(c.Calls(), ";"); got != "rollback pggit-api  CVE by bob;rollback pggit-api  CVE by alice" {
		t.Fatalf("calls %q, want each caller named", got)
	}
}

// leadership is a Leadership in a test.
type leadership struct {
	leading bool
	leader  string
	err     error
	id      string
}

func (l *leadership) Leading() bool                          { return l.leading }
func (l *leadership) Leader(context.Context) (string, error) { return l.leader, l.err }
func (l *leadership) Identity() string                       { return l.id }

// TestFollowerHandsRequestsToTheLeader: a follower authenticates, then
// hands the request to the leader and passes its answer back; with no
// leader reachable it answers 503 with Retry-After and does nothing.
func TestFollowerHandsRequestsToTheLeader(t *testing.T) {
	const token = "tok"
	leaderC := controller()
	var gotHeader string
	leaderH := api.NewHandler(leaderC, api.Options{Token: []byte(token), Leadership: &leadership{leading: true, id: "a"}}, zap.NewNop())
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader = r.Header.Get(api.HeaderForwardedBy)
		leaderH.ServeHTTP(w, r)
	}))
	defer leader.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	alert := `{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"pggit-api"},"fingerprint":"f1"}]}`
	tests := []struct {
		name       string
		l          *leadership
		path, body string
		auth       string
		forwarded  string
		wantCode   int
		wantBody   string
		wantLeader string // calls the leader saw
	}{
		{name: "rollback handed over", l: &leadership{leader: leader.URL, id: "b"}, path: "/api/v1/targets/pggit-api/rollback",
			body: `{"reason":"CVE"}`, auth: token, wantCode: 202, wantBody: `"accepted": true`, wantLeader: "rollback pggit-api  CVE"},
		{name: "alert handed over", l: &leadership{leader: leader.URL, id: "b"}, path: "/api/v1/alerts/alertmanager",
			body: alert, auth: token, wantCode: 200, wantBody: `"fingerprint": "f1"`, wantLeader: "alert pggit-api rollback"},
		{name: "the leader's refusal passed back", l: &leadership{leader: leader.URL, id: "b"}, path: "/api/v1/targets/kube-dns/rollback",
			body: `{"reason":"x"}`, auth: token, wantCode: 404, wantLeader: "rollback kube-dns  x"},
		{name: "wrong token never handed over", l: &leadership{leader: leader.URL, id: "b"}, path: "/api/v1/targets/pggit-api/rollback",
			body: `{"reason":"x"}`, auth: "nope", wantCode: 403},
		{name: "no leader known", l: &leadership{err: errors.New("lease has no holder"), id: "b"}, path: "/api/v1/alerts/alertmanager",
			body: alert, auth: token, wantCode: 503, wantBody: "knows no leader: lease has no holder"},
		{name: "leader unreachable", l: &leadership{leader: dead.URL, id: "b"}, path: "/api/v1/targets/pggit-api/freeze",
			body: `{"reason":"x"}`, auth: token, wantCode: 503, wantBody: "did not answer"},
		{name: "handed over to a follower", l: &leadership{leader: leader.URL, id: "b"}, path: "/api/v1/targets/pggit-api/rollback",
			body: `{"reason":"x"}`, auth: token, forwarded: "a", wantCode: 503, wantBody: "a handed this request on, and b does not lead"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaderC.Reset()
			gotHeader = ""
			follower := controller()
			h := api.NewHandler(follower, api.Options{Token: []byte(token), Leadership: tt.l}, zap.NewNop())
			req := httptest.NewRequest("POST", tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+tt.auth)
			if tt.forwarded != "" {
				req.Header.Set(api.HeaderForwardedBy, tt.forwarded)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("%d %s, want %d containing %q", rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
			if len(follower.Calls()) != 0 {
				t.Errorf("the follower acted: %v", follower.Calls())
			}
			if got := strings.Join(leaderC.Calls(), ";"); got != tt.wantLeader {
				t.Errorf("leader calls %q, want %q", got, tt.wantLeader)
			}
			if tt.wantLeader != "" && gotHeader != "b" {
				t.Errorf("%s = %q at the leader, want b", api.HeaderForwardedBy, gotHeader)
			}
			if rec.Code == 503 && rec.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

// TestAlertsNotJudgedAre503: an alert the leader could not judge makes the
// whole notification 503, so Alertmanager sends it again.
func TestAlertsNotJudgedAre503(t *testing.T) {
	c := controller()
	c.Retry = true
	h := api.NewHandler(c, api.Options{Token: []byte("tok")}, zap.NewNop())
	req := httptest.NewRequest("POST", "/api/v1/alerts/alertmanager", strings.NewReader(`{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"pggit-api"}}]}`))
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), `"retry": true`) {
		t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// TestClientRetries503: the CLI's client sends a request again after a
// 503 with Retry-After (a leader change), within its context.
func TestClientRetries503(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		b, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(b), "CVE") {
			t.Errorf("attempt %d lost the body: %q", n, b)
		}
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(202)
		_, _ = io.WriteString(w, `{"target":"pggit-api","accepted":true}`)
	}))
	defer srv.Close()
	cl := &api.Client{BaseURL: srv.URL, Token: "t"}
	res, err := cl.Rollback(context.Background(), "pggit-api", "", "CVE")
	if err != nil || !res.Accepted || n != 2 {
		t.Fatalf("res %+v err %v after %d attempts", res, err, n)
	}
}
