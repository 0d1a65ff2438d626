package response

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
)

// The previous version is unhealthy too: the ramp's health check stops the
// plan at 2 of the 4 recorded replicas of it (never toggling back to the
// bad one). The page says exactly the state left behind and what a human
// must decide, and the incident record carries it.
func TestHalfwayRollbackPagesTheStateLeftBehind(t *testing.T) {
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer sick.Close()
	tg := Target{}
	tg.Rollback.HealthURL = sick.URL
	f := newFixture(t, tg, guard.Options{Cooldown: time.Hour})
	f.fire(t)
	if got := image(f.c); got != "pggit-api:v1.0.3" {
		t.Fatalf("image %s: the plan must not toggle back to the bad version", got)
	}
	f.q.mu.Lock()
	var failed *notify.Event
	for i := range f.q.events {
		if f.q.events[i].Kind == notify.KindRollbackFailed {
			failed = &f.q.events[i]
		}
	}
	f.q.mu.Unlock()
	if failed == nil {
		t.Fatalf("no rollback_failed page: %v", f.q.kinds())
	}
	left := failed.Details.StateLeftBehind
	for _, want := range []string{
		"production/pggit-api api=pggit-api:v1.0.3, 2 replicas asked",
		"the previous version pggit-api:v1.0.3 is in place at 2 of the 4 recorded replicas",
		"pggit-api:v1.1.0 is not running",
		"kubectl -n production scale deployment/pggit-api --replicas=4",
		"will not put pggit-api:v1.1.0 back",
	} {
		if !strings.Contains(left, want) {
			t.Errorf("state left behind %q lacks %q", left, want)
		}
	}
	if !strings.Contains(failed.Summary, "left at 2 of 4 replicas of pggit-api:v1.0.3") {
		t.Errorf("page summary %q does not say the state left behind", failed.Summary)
	}
	// The incident record, folded from the same events, carries it.
	rec := &incident.Record{}
	f.q.mu.Lock()
	for _, e := range f.q.events {
		incident.Apply(rec, e)
	}
	f.q.mu.Unlock()
	if rec.Status != incident.StatusFailed || rec.LeftBehind != left {
		t.Errorf("incident %s, left behind %q, want failed with %q", rec.Status, rec.LeftBehind, left)
	}
	if md := incident.Markdown(rec, incident.Template{}); !strings.Contains(md, "## State left behind\n\n"+left) {
		t.Errorf("incident markdown lacks the state left behind:\n%s", md)
	}
}
