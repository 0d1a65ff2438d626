package console

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/window"
)

func get(t *testing.T, h http.Handler, method, path string, header map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	SecureHeaders(h).ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPages(t *testing.T) {
	c := newTestConsole(sampleFleet(), "s3cret")
	for _, tc := range []struct {
		path     string
		code     int
		ctype    string
		want     []string
		dontWant []string
	}{
		{path: "/", code: 200, ctype: "text/html; charset=utf-8", want: []string{
			`data-trigger="pggit-api/error-rate" data-state="pending"`, "9 s of 10 s", `data-trigger="search/replication-lag" data-state="nodata"`,
			"blind for 5 s", "PLAN RUNNING: quick", "FROZEN", "DRY-RUN", `<svg class="spark"`, "threshold &gt; 0.05", "Leader · rollguard-0",
			`<span class="n">2</span> <span class="w">PENDING</span>`, `<span class="n">1</span> <span class="w">NO DATA</span>`,
		}},
		{path: "/?show=attention", code: 200, want: []string{"1 all-OK hidden", `href="/targets/billing"`}, dontWant: []string{`href="/targets/web"`}},
		{path: "/targets/pggit-api", code: 200, want: []string{"Plan <strong>quick</strong>", "restore pggit-api:v1.0.3", "Cooldown", "12m 03s left",
			"Would not roll back: cooldown", `href="/incidents/pggit-api-6d5f8c9b7"`, `id="tmpl-actions"`, `<option value="quick">`}},
		{path: "/targets/nope", code: 404, want: []string{"No target named &#34;nope&#34; is configured."}},
		{path: "/targets/pggit-api/plan?action=quick", code: 200, want: []string{`id="plan"`, "Replicas to restore"}},
		{path: "/incidents", code: 200, want: []string{"pggit-api-6d5f8c9b7", "resolved"}},
		{path: "/incidents/pggit-api-6d5f8c9b7", code: 200, want: []string{"Breach started (above 0.05)", "0:10", `<svg class="chart"`,
			`class="chart-window"`, `class="chart-threshold"`, "breach held 10 s", "pagerduty", "slack: 503", "15 s", "report.md", "record.json"},
			dontWant: []string{">incident<"}},
		{path: "/incidents/missing", code: 404},
		{path: "/incidents/..%2Fetc", code: 404},
		{path: "/incidents/pggit-api-6d5f8c9b7/report.md", code: 200, ctype: "text/markdown; charset=utf-8", want: []string{"# Incident pggit-api-6d5f8c9b7"}},
		{path: "/incidents/pggit-api-6d5f8c9b7/record.json", code: 200, ctype: "application/json", want: []string{`"id": "pggit-api-6d5f8c9b7"`}},
		{path: "/assets/console.js", code: 200, ctype: "text/javascript; charset=utf-8", want: []string{"Authorization"}},
		{path: "/assets/console.css", code: 200, ctype: "text/css; charset=utf-8"},
		{path: "/nothing-here", code: 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := get(t, c, http.MethodGet, tc.path, nil)
			b := body(t, r)
			if r.StatusCode != tc.code {
				t.Fatalf("status %d, want %d\n%s", r.StatusCode, tc.code, b)
			}
			if tc.ctype != "" && r.Header.Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type %q, want %q", r.Header.Get("Content-Type"), tc.ctype)
			}
			if got := r.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
				t.Errorf("Content-Security-Policy %q", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(b, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tc.dontWant {
				if strings.Contains(b, w) {
					t.Errorf("page has %q", w)
				}
			}
		})
	}
}

// Each target says whether this replica acts on it: LIVE, DRY-RUN,
// FROZEN, or FOLLOWER on a replica without the lease.
func TestModeBadges(t *testing.T) {
	f := sampleFleet()
	b := body(t, get(t, newTestConsole(f, ""), http.MethodGet, "/", nil))
	if n := strings.Count(b, `class="badge live"`); n != 2 {
		t.Errorf("leader: %d LIVE badges, want 2 (billing, pggit-api)", n)
	}
	f.snap.Leader = false
	b = body(t, get(t, newTestConsole(f, ""), http.MethodGet, "/", nil))
	if strings.Contains(b, `class="badge live"`) || strings.Count(b, `class="badge follower"`) != 4 || !strings.Contains(b, "Follower: the leader acts") {
		t.Errorf("follower: badges wrong")
	}
}

func TestDownloadsAreAttachments(t *testing.T) {
	c := newTestConsole(sampleFleet(), "")
	for _, p := range []string{"report.md", "record.json"} {
		r := get(t, c, http.MethodGet, "/incidents/pggit-api-6d5f8c9b7/"+p, nil)
		want := `attachment; filename="incident-pggit-api-6d5f8c9b7.` + strings.TrimPrefix(p[strings.Index(p, "."):], ".") + `"`
		if got := r.Header.Get("Content-Disposition"); got != want {
			t.Errorf("%s: Content-Disposition %q, want %q", p, got, want)
		}
	}
}

// Without a token configured nothing in any page offers an action.
func TestNoActionsWithoutToken(t *testing.T) {
	for _, tc := range []struct {
		token string
		want  bool
	}{{"", false}, {"s3cret", true}} {
		c := newTestConsole(sampleFleet(), tc.token)
		for _, p := range []string{"/", "/targets/pggit-api", "/incidents/pggit-api-6d5f8c9b7"} {
			b := body(t, get(t, c, http.MethodGet, p, nil))
			has := strings.Contains(b, `id="auth-slot"`)
			if has != tc.want {
				t.Errorf("token %q, %s: sign-in slot present %v, want %v", tc.token, p, has, tc.want)
			}
			if p == "/targets/pggit-api" && strings.Contains(b, "tmpl-actions") != tc.want {
				t.Errorf("token %q: action template present %v, want %v", tc.token, !tc.want, tc.want)
			}
			if strings.Contains(b, "s3cret") {
				t.Errorf("%s: the token is in the page", p)
			}
		}
	}
}

func TestAuth(t *testing.T) {
	for _, tc := range []struct {
		name, configured, header string
		code                     int
	}{
		{"actions off", "", "Bearer x", http.StatusForbidden},
		{"no header", "s3cret", "", http.StatusUnauthorized},
		{"not bearer", "s3cret", "Basic czNjcmV0", http.StatusUnauthorized},
		{"wrong", "s3cret", "Bearer nope", http.StatusForbidden},
		{"right", "s3cret", "Bearer s3cret", http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestConsole(sampleFleet(), tc.configured)
			r := get(t, c, http.MethodPost, "/console/auth", map[string]string{"Authorization": tc.header})
			if r.StatusCode != tc.code {
				t.Errorf("status %d, want %d", r.StatusCode, tc.code)
			}
		})
	}
	// A GET (a link, an image tag) never reaches it.
	c := newTestConsole(sampleFleet(), "s3cret")
	if r := get(t, c, http.MethodGet, "/console/auth", map[string]string{"Authorization": "Bearer s3cret"}); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /console/auth: %d, want 405", r.StatusCode)
	}
}

// The CSP forbids inline script and style: no page may carry any, or the
// browser would silently drop it.
func TestNoInlineScriptOrStyle(t *testing.T) {
	c := newTestConsole(sampleFleet(), "s3cret")
	script := regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)
	inline := regexp.MustCompile(`(?i)\sstyle=|\son[a-z]+=|<style|javascript:`)
	for _, p := range []string{"/", "/?show=attention", "/targets/pggit-api", "/targets/pggit-api/plan", "/incidents", "/incidents/pggit-api-6d5f8c9b7", "/targets/nope"} {
		b := body(t, get(t, c, http.MethodGet, p, nil))
		for _, m := range script.FindAllStringSubmatch(b, -1) {
			if !strings.Contains(m[1], `src="/assets/`) || strings.TrimSpace(m[2]) != "" {
				t.Errorf("%s: inline script %q", p, m[0])
			}
		}
		if m := inline.FindString(b); m != "" {
			t.Errorf("%s: inline script or style: %q", p, m)
		}
	}
}

// Names come from the config and the cluster: they are escaped.
func TestEscapesNames(t *testing.T) {
	f := sampleFleet()
	f.snap.Targets[0].Name = `<img src=x onerror=alert(1)>`
	f.snap.Targets[0].LastResult = `"><script>alert(1)</script>`
	b := body(t, get(t, newTestConsole(f, ""), http.MethodGet, "/", nil))
	if strings.Contains(b, "<img src=x") || strings.Contains(b, "<script>alert") {
		t.Errorf("unescaped name in the overview")
	}
}

func TestRowProgress(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n         int
		value     func(int) float64
		forDur    time.Duration
		state     string
		held      string
		percent   int
		blind     string
		condition string
	}{
		{name: "ok", n: 5, value: func(int) float64 { return 0.01 }, forDur: 60 * time.Second, state: "ok", held: "0 s of 60 s", condition: "> 0.05"},
		{name: "pending 40 of 60", n: 41, value: func(int) float64 { return 0.2 }, forDur: 60 * time.Second, state: "pending", held: "40 s of 60 s", percent: 66},
		{name: "firing", n: 64, value: func(int) float64 { return 0.2 }, forDur: 60 * time.Second, state: "firing", held: "held 63 s, window 60 s: fired", percent: 100},
		{name: "blind", n: 8, value: func(i int) float64 {
			if i < 3 {
				return 0.2
			}
			return math.NaN()
		}, forDur: 60 * time.Second, state: "nodata", held: "window reset: no data is never a breach", blind: "blind for 4 s"},
		{name: "immediate", n: 1, value: func(int) float64 { return 0.2 }, forDur: 0, state: "firing", held: "fires on the first breach", percent: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestConsole(sampleFleet(), "")
			v := view("t", "x", 0.05, tc.forDur, tc.n, tc.value)
			r := c.row(v, t0, time.Second, sparkSmall)
			if r.State != tc.state || r.HeldText != tc.held || r.Percent != tc.percent || r.Blind != tc.blind {
				t.Errorf("row = state %q held %q percent %d blind %q; want %q %q %d %q", r.State, r.HeldText, r.Percent, r.Blind, tc.state, tc.held, tc.percent, tc.blind)
			}
			if tc.condition != "" && r.Condition != tc.condition {
				t.Errorf("condition %q, want %q", r.Condition, tc.condition)
			}
		})
	}
}

func TestStaleSample(t *testing.T) {
	c := New(sampleFleet(), nil, nil, nil, Options{Now: func() time.Time { return t0.Add(10 * time.Second) }}, nil)
	v := view("t", "x", 0.05, time.Minute, 3, func(int) float64 { return 0.01 })
	if r := c.row(v, t0.Add(10*time.Second), time.Second, sparkSmall); r.Stale != "last sample 10 s ago" {
		t.Errorf("stale = %q", r.Stale)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0 s", 40 * time.Second: "40 s", 119 * time.Second: "119 s", 125 * time.Second: "2m 05s",
		3*time.Hour + 10*time.Minute: "3h 10m", 72 * time.Hour: "3d", -time.Second: "0 s",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestEmptyFleet(t *testing.T) {
	c := New(&fleet{snap: Snapshot{}}, nil, nil, nil, Options{}, nil)
	r := get(t, c, http.MethodGet, "/", nil)
	if b := body(t, r); r.StatusCode != 200 || !strings.Contains(b, "No targets to show.") || !strings.Contains(b, "Every trigger is OK.") {
		t.Errorf("empty fleet: %d\n%s", r.StatusCode, b)
	}
	if r := get(t, c, http.MethodGet, "/incidents/x", nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("incident without a store: %d", r.StatusCode)
	}
}

// A large fleet lists calm targets one line each; ?show=all has every row.
func TestLargeFleetListsCalmTargetsCompactly(t *testing.T) {
	c := newTestConsole(manyTargets(120), "")
	b := body(t, get(t, c, http.MethodGet, "/", nil))
	rows := strings.Count(b, "<tr class=")
	if !strings.Contains(b, "118 targets with every trigger OK") || rows != 2*4+2 {
		t.Errorf("overview of 120 targets (2 firing): %d trigger rows, calm list present %v", rows, strings.Contains(b, "every trigger OK"))
	}
	all := body(t, get(t, c, http.MethodGet, "/?show=all", nil))
	if n := strings.Count(all, "<tr class="); n != 120*4+2 {
		t.Errorf("?show=all: %d trigger rows, want 482 (480 and the 2 needing attention)", n)
	}
}

func manyTargets(n int) *fleet {
	f := &fleet{snap: Snapshot{Version: "bench", Leader: true, Interval: time.Second}}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%04d", i)
		t := Target{Name: name, Namespace: "production", Deployment: name, Image: "api=" + name + ":v1"}
		for j, kind := range []string{"error-rate", "latency-p99", "connections", "replication-lag"} {
			val := func(k int) float64 { return 0.01 * float64(1+(k+i+j)%5) }
			if i%97 == 0 && j == 0 {
				val = func(int) float64 { return 0.3 }
			}
			t.Triggers = append(t.Triggers, view(name, kind, 0.05, 60*time.Second, 14, val))
		}
		f.snap.Targets = append(f.snap.Targets, t)
	}
	return f
}

var _ = evaluator.View{}
var _ = window.StateOK
