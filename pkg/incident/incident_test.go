package incident

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
)

var t0 = time.Date(2026, 11, 25, 14, 32, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// stream is a whole quick rollback as the executor reports it.
func stream() []notify.Event {
	tg := notify.Target{Namespace: "production", Deployment: "pggit-api"}
	id := notify.IncidentID(tg, "7")
	ev := func(k notify.Kind, sec int, d notify.Details) notify.Event {
		return notify.Event{Kind: k, Time: at(sec), Target: tg, Trigger: "error-rate", IncidentID: id,
			Severity: notify.SeverityCritical, Details: d}
	}
	step := func(k notify.Kind, sec int, name string, milestone ...string) notify.Event {
		d := notify.Details{Step: name}
		if len(milestone) == 1 {
			d.Milestone = milestone[0]
		}
		if k == notify.KindStepFinished {
			d.StepOutcome = notify.OutcomeOK
		}
		return ev(k, sec, d)
	}
	return []notify.Event{
		{Kind: notify.KindDetected, Time: at(190), Target: tg, Trigger: "error-rate", IncidentID: id,
			Severity: notify.SeverityCritical, Summary: "error rate 0.2 above 0.05 for 1m0s",
			Details: notify.Details{
				Query:     `sum(rate(http_requests_total{status="500"}[1m])) / sum(rate(http_requests_total[1m]))`,
				Threshold: new(0.05), Op: "above", Window: time.Minute,
				Samples:    []notify.Sample{{Time: at(130), Value: 0.19}, {Time: at(160), Value: 0.21}, {Time: at(190), Value: 0.2}},
				BadVersion: "v1.1.0", DeployedAt: at(0), BreachStartedAt: at(130)}},
		ev(notify.KindRollbackStarted, 191, notify.Details{Strategy: "quick", RestoredVersion: "v1.0.3",
			Plan: []string{"preflight", "stop", "application", "wait", "ramp", "verify"}}),
		step(notify.KindStepStarted, 191, "preflight"),
		step(notify.KindStepFinished, 192, "preflight"),
		step(notify.KindStepStarted, 192, "stop"),
		step(notify.KindStepFinished, 195, "stop"),
		step(notify.KindStepStarted, 195, "application"),
		step(notify.KindStepFinished, 196, "application"),
		step(notify.KindStepStarted, 196, "wait"),
		step(notify.KindStepFinished, 260, "wait", notify.MilestoneRestored),
		step(notify.KindStepStarted, 260, "ramp"),
		step(notify.KindStepFinished, 292, "ramp"),
		step(notify.KindStepStarted, 292, "verify"),
		step(notify.KindStepFinished, 480, "verify", notify.MilestoneStable),
		ev(notify.KindRollbackSucceeded, 480, notify.Details{
			Verification:  "health 200, SELECT 1 ok, error rate 0.004 below 0.05",
			DataIntegrity: &notify.DataIntegrity{AlertDeliveryQueue: 11000, UnresolvedConflicts: 0, LatestSchemaVersions: []string{"phase7_webhooks 7"}}}),
	}
}

func build(events []notify.Event) *Record {
	r := &Record{}
	for _, e := range events {
		Apply(r, e)
	}
	return r
}

func TestApplyTimeline(t *testing.T) {
	r := build(stream())
	want := []Entry{
		{at(0), "Deployment of v1.1.0 seen"},
		{at(130), "Breach started (above 0.05)"},
		{at(190), "Trigger error-rate detected: error rate 0.2 above 0.05 for 1m0s"},
		{at(191), "Rollback initiated (strategy quick) to v1.0.3"},
		{at(191), "Step preflight started"},
		{at(192), "Step preflight finished: ok"},
		{at(192), "Step stop started"},
		{at(195), "Step stop finished: ok"},
		{at(195), "Step application started"},
		{at(196), "Step application finished: ok"},
		{at(196), "Step wait started"},
		{at(260), "Step wait finished: ok"},
		{at(260), "Previous version v1.0.3 restored"},
		{at(260), "Step ramp started"},
		{at(292), "Step ramp finished: ok"},
		{at(292), "Step verify started"},
		{at(480), "Step verify finished: ok"},
		{at(480), "System stable, Trigger error-rate back below 0.05"},
		{at(480), "Rollback succeeded"},
	}
	if !reflect.DeepEqual(r.Timeline, want) {
		t.Errorf("timeline:\n%s\nwant:\n%s", entries(r.Timeline), entries(want))
	}
	if r.Status != StatusResolved || r.BadVersion != "v1.1.0" || r.RestoredVersion != "v1.0.3" || len(r.Steps) != 6 ||
		r.Evidence.Window != "1m0s" || len(r.Evidence.Samples) != 3 || r.DataIntegrity == nil || r.Duration() != 350*time.Second {
		t.Errorf("record = %+v", r)
	}
	// Redelivery (at-least-once) changes nothing.
	again := build(append(stream(), stream()...))
	if !reflect.DeepEqual(again, r) {
		t.Errorf("applying the stream twice differs:\n%s", entries(again.Timeline))
	}
}

func entries(es []Entry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.Time.Format("15:04:05") + " " + e.What + "\n")
	}
	return b.String()
}

func TestApplyStatusTransitions(t *testing.T) {
	tg := notify.Target{Namespace: "ns", Deployment: "d"}
	e := func(k notify.Kind, sec int, d notify.Details) notify.Event {
		return notify.Event{Kind: k, Time: at(sec), Target: tg, IncidentID: "ns_d_1", Details: d}
	}
	cases := []struct {
		name   string
		events []notify.Event
		want   Status
		last   string
	}{
		{"failed stays failed after a late step", []notify.Event{
			e(notify.KindRollbackStarted, 1, notify.Details{}),
			e(notify.KindRollbackFailed, 5, notify.Details{Error: "rollout timed out"}),
			e(notify.KindStepFinished, 6, notify.Details{Step: "wait", StepOutcome: "failed"}),
		}, StatusFailed, "Step wait finished: failed"},
		{"cannot roll back", []notify.Event{
			e(notify.KindCannotRollback, 1, notify.Details{Reason: "deployment is frozen"}),
		}, StatusCannotRollback, "Cannot roll back: deployment is frozen"},
		{"dry run", []notify.Event{
			e(notify.KindWouldRollback, 1, notify.Details{Plan: []string{"preflight", "stop"}}),
		}, StatusDryRun, "Dry-run: would roll back (plan: preflight, stop)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := build(tc.events)
			if r.Status != tc.want {
				t.Errorf("status = %s, want %s", r.Status, tc.want)
			}
			if got := r.Timeline[len(r.Timeline)-1].What; got != tc.last {
				t.Errorf("last entry = %q, want %q", got, tc.last)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	r := build(stream())
	tmpl := Template{Impact: "Webhook delivery system", OnCall: "@pggit-oncall", StatusPage: "https://status.pggit.io",
		EmailTo: []string{"engineering-leads@pggit.io", "ops@pggit.io"}, StatusURL: "http://rollguard:8080"}
	md := Markdown(r, tmpl)
	for _, want := range []string{
		"🚨 INCIDENT: production/pggit-api Deployment Rollback (error-rate)",
		"Severity: CRITICAL", "Status: RESOLVED", "Impact: Webhook delivery system",
		"- 14:32:00 UTC: Deployment of v1.1.0 seen",
		"- 14:35:10 UTC: Trigger error-rate detected",
		"- 14:35:11 UTC: Rollback initiated (strategy quick) to v1.0.3",
		"- 14:36:20 UTC: Previous version v1.0.3 restored",
		"- 14:40:00 UTC: System stable",
		"Root Cause: To be determined",
		"- Rolled back to v1.0.3",
		"- Verified data integrity: alert_delivery_queue 11000 rows, 0 unresolved replication conflicts",
		"Next Steps:\n- Root cause analysis", "On-Call: @pggit-oncall", "Status Page: https://status.pggit.io",
		"| 14:34:10 UTC | 0.19 |",
		"| wait | 14:35:16 UTC | 14:36:20 UTC | ok |  |",
		"- [ ] Close incident ticket",
		"Subject: Incident Report: production/pggit-api Deployment Rollback (error-rate)",
		"To: engineering-leads@pggit.io, ops@pggit.io",
		"- 2026-11-25 14:40:00 UTC: Rollback succeeded",
		"- Duration: 5m50s",
		"1. [ ] Root cause analysis (assigned to: [NAME])",
		"See incident details: http://rollguard:8080/api/v1/incidents/production_pggit-api_7",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if n := strings.Count(md, "\n- [ ] "); n != len(RecoveryChecklist()) {
		t.Errorf("checklist items = %d, want %d", n, len(RecoveryChecklist()))
	}
	// Every timeline line in both templates has a timestamp.
	slackLine := regexp.MustCompile(`^- \d\d:\d\d:\d\d UTC: \S`)
	emailLine := regexp.MustCompile(`^- 2026-11-25 \d\d:\d\d:\d\d UTC: \S`)
	var slackN, emailN int
	for _, l := range strings.Split(md, "\n") {
		if slackLine.MatchString(l) {
			slackN++
		}
		if emailLine.MatchString(l) {
			emailN++
		}
	}
	if slackN != len(r.Timeline) || emailN != len(r.Timeline) {
		t.Errorf("timestamped lines slack %d email %d, want %d each", slackN, emailN, len(r.Timeline))
	}
	if strings.Contains(md, "0001-01-01") || strings.Contains(md, "00:00:00 UTC") {
		t.Error("markdown has a zero time")
	}
}

func TestStoreAndHandler(t *testing.T) {
	dir := t.TempDir()
	st, err := NewStore(dir, Template{OnCall: "@oncall"})
	if err != nil {
		t.Fatal(err)
	}
	rec := NewRecorder(st, zap.NewNop())
	for _, e := range stream() {
		if err := rec.Notify(context.Background(), e); err != nil {
			t.Fatalf("Notify %s: %v", e.Kind, err)
		}
	}
	// A second incident, older, and a test event that must not be recorded.
	other := notify.Event{Kind: notify.KindCannotRollback, Time: t0.Add(-time.Hour), Target: notify.Target{Namespace: "staging", Deployment: "api"},
		IncidentID: "staging_api_3", Details: notify.Details{Reason: "frozen"}}
	for _, e := range []notify.Event{other, {Kind: notify.KindTest, IncidentID: "x"}} {
		if err := rec.Notify(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	if want := []string{"production_pggit-api_7.json", "production_pggit-api_7.md", "staging_api_3.json", "staging_api_3.md"}; !reflect.DeepEqual(names, want) {
		t.Errorf("files = %v, want %v (no temp files left)", names, want)
	}
	got, err := st.Get("production_pggit-api_7")
	if err != nil {
		t.Fatal(err)
	}
	if want := build(stream()); !reflect.DeepEqual(got.Timeline, want.Timeline) || !strings.Contains(got.EmailEscalation, "Subject: Incident Report") {
		t.Errorf("stored record differs from the fold:\n%s", entries(got.Timeline))
	}

	srv := httptest.NewServer(st.Handler())
	defer srv.Close()
	cases := []struct {
		path, accept string
		code         int
		ctype        string
		contains     string
	}{
		{"/api/v1/incidents", "", 200, "application/json", `"id": "production_pggit-api_7"`},
		{"/api/v1/incidents/production_pggit-api_7", "", 200, "application/json", `"restoredVersion": "v1.0.3"`},
		{"/api/v1/incidents/production_pggit-api_7?format=markdown", "", 200, "text/markdown; charset=utf-8", "## Recovery checklist"},
		{"/api/v1/incidents/production_pggit-api_7", "text/markdown", 200, "text/markdown; charset=utf-8", "On-Call: @oncall"},
		{"/api/v1/incidents/nope", "", 404, "text/plain; charset=utf-8", "incident not found"},
		{"/api/v1/incidents/..%2Fetc", "", 400, "text/plain; charset=utf-8", "invalid incident id"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(raw)
		if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %d %s %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body[:min(200, len(body))])
		}
	}
	resp, err := http.Post(srv.URL+"/api/v1/incidents/production_pggit-api_7", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", resp.StatusCode)
	}
	// List order: newest first.
	list, _ := st.List()
	if len(list) != 2 || list[0].ID != "production_pggit-api_7" || list[1].Status != StatusCannotRollback {
		t.Errorf("list = %+v", list)
	}
}

func TestStoreRejectsBadIDs(t *testing.T) {
	st, _ := NewStore(t.TempDir(), Template{})
	for _, id := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("a", 201)} {
		if err := st.Put(&Record{ID: id}); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Put(%q) = %v, want %v", id, err, ErrInvalidID)
		}
	}
	rec := NewRecorder(st, nil)
	err := rec.Notify(context.Background(), notify.Event{Kind: notify.KindDetected, IncidentID: "../../etc/passwd"})
	if !errors.Is(err, ErrInvalidID) || notify.IsRetryable(err) {
		t.Errorf("Notify with bad id = %v, want permanent %v", err, ErrInvalidID)
	}
}

func TestRecorderWriteFailureIsRetryable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "incidents")
	st, err := NewStore(dir, Template{})
	if err != nil {
		t.Fatal(err)
	}
	// The directory turns into a file: every read and write fails with
	// ENOTDIR, as a broken volume would, even for root.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = NewRecorder(st, nil).Notify(context.Background(), stream()[0])
	if err == nil || !notify.IsRetryable(err) {
		t.Errorf("err = %v, want retryable", err)
	}
}
