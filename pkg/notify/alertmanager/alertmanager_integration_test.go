package alertmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/notifytest"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// routed records what Alertmanager's own webhook receiver delivered: the
// route an organisation already has (Opsgenie, email...) in its simplest
// form.
type routed struct {
	mu   sync.Mutex
	msgs []amMessage
}

type amMessage struct {
	Status string `json:"status"`
	Alerts []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

func (r *routed) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	var m amMessage
	if err := json.Unmarshal(b, &m); err == nil {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

func (r *routed) statuses(incident string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		for _, a := range m.Alerts {
			if a.Labels["rollguard_incident"] == incident {
				out = append(out, a.Status)
			}
		}
	}
	return out
}

type apiAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func getAlerts(ctx context.Context, base string) ([]apiAlert, error) {
	return notifytest.GetJSON[[]apiAlert](ctx, base+"/api/v2/alerts")
}

// TestIntegrationAlertmanager runs events through rollguard's delivery
// queue into Debian's Alertmanager: an incident is one alert whose
// annotations follow the milestones, the alert is routed to the
// organisation's receiver, and a successful rollback resolves it there; an
// incident rollguard could not handle stays firing.
func TestIntegrationAlertmanager(t *testing.T) {
	env := sandboxenv.Load(t)
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	rt := &routed{}
	hook := httptest.NewServer(rt)
	defer hook.Close()
	am := sandboxfixture.Alertmanager(t, env, fmt.Sprintf(`route:
  receiver: oncall
  group_by: [rollguard_incident]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: [team="payments"]
      receiver: oncall
receivers:
  - name: oncall
    webhook_configs:
      - url: %s/hook
        send_resolved: true
`, hook.URL))

	n, err := New(Options{URLs: []string{am}, Labels: map[string]string{"team": "payments"}, ActiveFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	q := notify.NewQueue(notify.Options{BaseBackoff: 100 * time.Millisecond}, []notify.Notifier{n}, zaptest.NewLogger(t), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.Run(ctx) }()
	defer func() { cancel(); <-done }()

	now := time.Now().UTC().Truncate(time.Millisecond)
	ok := notify.Target{Namespace: "rg-am", Deployment: "pggit-api"}
	okID := notify.IncidentID(ok, "7")
	stuck := notify.Target{Namespace: "rg-am", Deployment: "billing"}
	stuckID := notify.IncidentID(stuck, "3")
	q.Enqueue(notify.Event{Kind: notify.KindDetected, Time: now, Target: ok, Trigger: "error-rate", IncidentID: okID, Severity: notify.SeverityCritical})
	q.Enqueue(notify.Event{Kind: notify.KindRollbackStarted, Time: now.Add(time.Millisecond), Target: ok, Trigger: "error-rate", IncidentID: okID, Severity: notify.SeverityCritical,
		Details: notify.Details{Plan: []string{"stop", "application", "ramp"}}})
	q.Enqueue(notify.Event{Kind: notify.KindCannotRollback, Time: now, Target: stuck, Trigger: "error-rate", IncidentID: stuckID, Severity: notify.SeverityCritical,
		Details: notify.Details{Reason: "target is frozen"}})

	sandboxfixture.WaitFor(t, "both incidents firing in Alertmanager", 10*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		as, err := getAlerts(ctx, am)
		if err != nil {
			return false, "", err
		}
		kinds := map[string]string{}
		for _, a := range as {
			if a.Status.State == "active" {
				kinds[a.Labels["rollguard_incident"]] = a.Annotations["rollguard_kind"]
			}
		}
		return len(as) == 2 && kinds[okID] == "rollback_started" && kinds[stuckID] == "cannot_rollback", fmt.Sprint(kinds), nil
	})
	sandboxfixture.WaitFor(t, "the route delivered both as firing", 10*time.Second, 100*time.Millisecond, func(context.Context) (bool, string, error) {
		a, b := rt.statuses(okID), rt.statuses(stuckID)
		return len(a) > 0 && a[0] == "firing" && len(b) > 0 && b[0] == "firing", fmt.Sprint(a, b), nil
	})

	q.Enqueue(notify.Event{Kind: notify.KindRollbackSucceeded, Time: time.Now().UTC(), Target: ok, Trigger: "error-rate", IncidentID: okID, Severity: notify.SeverityCritical})
	sandboxfixture.WaitFor(t, "the rolled-back incident resolved through the route", 15*time.Second, 100*time.Millisecond, func(context.Context) (bool, string, error) {
		s := rt.statuses(okID)
		return len(s) > 0 && s[len(s)-1] == "resolved", fmt.Sprint(s), nil
	})
	as, err := getAlerts(context.Background(), am)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		switch a.Labels["rollguard_incident"] {
		case stuckID:
			if a.Status.State != "active" || a.EndsAt.Before(time.Now().Add(50*time.Minute)) {
				t.Errorf("the blocked incident: state %s, endsAt %s; want active for about an hour", a.Status.State, a.EndsAt)
			}
			if a.Labels["team"] != "payments" || a.Labels["severity"] != "critical" || a.Labels["alertname"] != "RollguardIncident" {
				t.Errorf("labels %v", a.Labels)
			}
		case okID:
			if a.Status.State == "active" {
				t.Errorf("the rolled-back incident is still active: %+v", a)
			}
		}
	}
	if s := rt.statuses(stuckID); s[len(s)-1] != "firing" {
		t.Errorf("the blocked incident's deliveries %v, want it still firing", s)
	}
}
