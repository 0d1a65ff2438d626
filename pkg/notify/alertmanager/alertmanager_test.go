package alertmanager

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
)

var at = time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)

var tgt = notify.Target{Namespace: "production", Deployment: "pggit-api"}

func incident() []notify.Event {
	id := notify.IncidentID(tgt, "7")
	return []notify.Event{
		{Kind: notify.KindDetected, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Query: "ratio", Threshold: new(0.05), Op: "above", BadVersion: "v1.1.0"}},
		{Kind: notify.KindRollbackStarted, Time: at.Add(time.Second), Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Plan: []string{"stop", "application"}}},
		// Step events carry no trigger nor severity: the alert is still
		// the incident's.
		{Kind: notify.KindStepStarted, Time: at.Add(2 * time.Second), Target: tgt, IncidentID: id, Details: notify.Details{Step: "stop"}},
		{Kind: notify.KindRollbackSucceeded, Time: at.Add(30 * time.Second), Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{RestoredVersion: "v1.0.3"}},
	}
}

type server struct {
	mu      sync.Mutex
	alerts  [][]Alert
	answers []int
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/am/api/v2/alerts" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var as []Alert
	if err := json.Unmarshal(b, &as); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alerts = append(s.alerts, as)
	code := http.StatusOK
	if len(s.answers) > 0 {
		code, s.answers = s.answers[0], s.answers[1:]
	}
	w.WriteHeader(code)
}

func TestOneAlertPerIncident(t *testing.T) {
	srv := &server{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	n, err := New(Options{URLs: []string{ts.URL + "/am/"}, Labels: map[string]string{"team": "payments"}, ActiveFor: time.Hour,
		StatusURL: "https://rollguard.example"})
	if err != nil {
		t.Fatal(err)
	}
	evs := incident()
	for _, e := range evs {
		if err := n.Notify(context.Background(), e); err != nil {
			t.Fatalf("%s: %v", e.Kind, err)
		}
	}
	wantLabels := map[string]string{"alertname": "RollguardIncident", "namespace": "production", "deployment": "pggit-api",
		"trigger": "error-rate", "severity": "critical", "rollguard_incident": "production_pggit-api_7", "team": "payments"}
	if len(srv.alerts) != len(evs) {
		t.Fatalf("%d posts, want %d", len(srv.alerts), len(evs))
	}
	for i, as := range srv.alerts {
		if len(as) != 1 {
			t.Fatalf("post %d: %d alerts", i, len(as))
		}
		a := as[0]
		if !reflect.DeepEqual(a.Labels, wantLabels) {
			t.Errorf("%s: labels %v, want %v", evs[i].Kind, a.Labels, wantLabels)
		}
		if !a.StartsAt.Equal(at) {
			t.Errorf("%s: startsAt %s, want the incident's start %s", evs[i].Kind, a.StartsAt, at)
		}
		if a.Annotations["rollguard_kind"] != string(evs[i].Kind) {
			t.Errorf("%s: rollguard_kind %q", evs[i].Kind, a.Annotations["rollguard_kind"])
		}
		if a.GeneratorURL != "https://rollguard.example/api/v1/incidents/production_pggit-api_7" {
			t.Errorf("generatorURL %q", a.GeneratorURL)
		}
	}
	if got := srv.alerts[1][0].EndsAt; !got.Equal(evs[1].Time.Add(time.Hour)) {
		t.Errorf("rollback_started endsAt %s, want an hour after the event", got)
	}
	if got := srv.alerts[3][0].EndsAt; !got.Equal(evs[3].Time) {
		t.Errorf("rollback_succeeded endsAt %s, want the event's time (resolved)", got)
	}
	if d := srv.alerts[0][0].Annotations["description"]; d != "milestone: detected\nquery: ratio\nthreshold: above 0.05\nbad version: v1.1.0" {
		t.Errorf("description %q", d)
	}
	if s := srv.alerts[2][0].Annotations["summary"]; s != "production/pggit-api: rollback step stop started" {
		t.Errorf("step summary %q", s)
	}
}

func TestBlindAndTestAlerts(t *testing.T) {
	n, err := New(Options{URLs: []string{"http://am:9093"}})
	if err != nil {
		t.Fatal(err)
	}
	b := n.Alert(notify.Event{Kind: notify.KindBlind, Time: at, Target: tgt, Trigger: "latency-p99", Severity: notify.SeverityWarning, Security: true})
	want := map[string]string{"alertname": "RollguardBlind", "namespace": "production", "deployment": "pggit-api", "trigger": "latency-p99", "severity": "warning", "security": "true"}
	if !reflect.DeepEqual(b.Labels, want) || !b.EndsAt.Equal(at.Add(24*time.Hour)) {
		t.Errorf("blind alert %+v", b)
	}
	tst := n.Alert(notify.Event{Kind: notify.KindTest, Time: at, Target: notify.Target{Cluster: "eu-1", Namespace: "production", Deployment: "pggit-api"}, Summary: "hello"})
	want = map[string]string{"alertname": "RollguardTest", "cluster": "eu-1", "namespace": "production", "deployment": "pggit-api", "severity": "info"}
	if !reflect.DeepEqual(tst.Labels, want) || !tst.EndsAt.Equal(at.Add(5*time.Minute)) || tst.Annotations["summary"] != "hello" {
		t.Errorf("test alert %+v", tst)
	}
}

// Every Alertmanager gets the alert; a failure of one is retryable when
// any is, and the retry goes to all again.
func TestSeveralAlertmanagers(t *testing.T) {
	ok, flaky, broken := &server{}, &server{answers: []int{http.StatusServiceUnavailable}}, &server{answers: []int{http.StatusBadRequest}}
	tsOK, tsFlaky, tsBroken := httptest.NewServer(ok), httptest.NewServer(flaky), httptest.NewServer(broken)
	defer tsOK.Close()
	defer tsFlaky.Close()
	defer tsBroken.Close()

	n, err := New(Options{URLs: []string{tsOK.URL + "/am", tsFlaky.URL + "/am"}})
	if err != nil {
		t.Fatal(err)
	}
	e := incident()[0]
	err = n.Notify(context.Background(), e)
	if !notify.IsRetryable(err) || err.Error() != "alertmanager 1 post: 503 " {
		t.Fatalf("one of two down: %v, want retryable naming alertmanager 1", err)
	}
	if err := n.Notify(context.Background(), e); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(ok.alerts) != 2 || len(flaky.alerts) != 2 {
		t.Errorf("posts: %d and %d, want 2 each", len(ok.alerts), len(flaky.alerts))
	}

	n, err = New(Options{URLs: []string{tsBroken.URL + "/am"}})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Notify(context.Background(), e)
	if notify.IsRetryable(err) || !errors.Is(err, notify.ErrRejected) {
		t.Errorf("400: %v, want final", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "alertmanager: no URL"},
		{Options{URLs: []string{"am:9093"}}, "alertmanager: url 0 is not an http(s) URL"},
		{Options{URLs: []string{"http://am:9093"}, Labels: map[string]string{"severity": "low"}}, `alertmanager: label "severity" is set by rollguard`},
	} {
		if _, err := New(tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %s", tc.opts, err, tc.want)
		}
	}
	if _, err := New(Options{URLs: []string{"http://user:s3cr3t@am:9093"}}); err != nil {
		t.Fatal(err)
	}
	n, _ := New(Options{URLs: []string{"http://user:s3cr3t-pw@127.0.0.1:1"}})
	if err := n.Notify(context.Background(), incident()[0]); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %v: want one without the password", err)
	}
}

// TestRecordFailedIsItsOwnAlert: the alarm about a record never updates
// (nor reopens) the incident's alert.
func TestRecordFailedIsItsOwnAlert(t *testing.T) {
	n, err := New(Options{URLs: []string{"http://am:9093"}, Client: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	inc := notify.Event{Kind: notify.KindRollbackSucceeded, Time: at, IncidentID: "ns_d_h", Target: notify.Target{Namespace: "ns", Deployment: "d"}}
	resolved := n.Alert(inc)
	alarm := n.Alert(notify.Event{Kind: notify.KindRecordFailed, Time: at.Add(time.Second), IncidentID: "ns_d_h", Target: inc.Target,
		Severity: notify.SeverityError})
	if alarm.Labels[LabelAlertname] != AlertRecordFailed || alarm.Labels[LabelIncident] != "ns_d_h" {
		t.Fatalf("alarm labels %v", alarm.Labels)
	}
	if again := n.Alert(inc); !again.EndsAt.Equal(resolved.EndsAt) || again.Labels[LabelAlertname] != AlertIncident {
		t.Errorf("the incident's alert changed after the alarm: %+v", again)
	}
}
