package response

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/notify"
)

// memAlertLog is an AlertLog in memory, shared by the leaders of a test.
type memAlertLog struct {
	mu sync.Mutex
	m  map[string]AlertEntry
}

func (l *memAlertLog) Load(context.Context) (map[string]AlertEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m), nil
}

func (l *memAlertLog) Save(_ context.Context, m map[string]AlertEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m = maps.Clone(m)
	return nil
}

func (l *memAlertLog) get(fp string) (AlertEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[fp]
	return e, ok
}

// deployAt deploys a new revision whose ReplicaSet is created at at.
func (f *fixture) deployAt(at time.Time, img string) {
	f.c.Now = func() time.Time { return at }
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = img })
}

func alertAsk(fp string, startsAt time.Time) Ask {
	return Ask{Target: "pggit-api", Action: ActionRollback, Reason: "alertmanager SecurityRollback: CVE", Security: true,
		By: notify.Requester{Kind: notify.RequestedByAlertmanager},
		Alert: &AlertRef{Fingerprint: fp, StartsAt: startsAt, Name: "SecurityRollback",
			Labels: map[string]string{"alertname": "SecurityRollback", "rollguard_target": "pggit-api"}}}
}

func (q *recQueue) ofKind(k notify.Kind) []notify.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []notify.Event
	for _, e := range q.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// TestAlertPredatingTheRevisionIsNotApplied: an alert that began before
// the current revision was deployed is about an earlier one; nothing is
// written and a human is paged, once, naming why.
func TestAlertPredatingTheRevisionIsNotApplied(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{})
	f.deployAt(f.now, "pggit-api:v1.2.0")
	before := len(f.c.Writes())
	ctx := context.Background()
	detail, err := f.r.Ask(ctx, alertAsk("f1", f.now.Add(-time.Minute)))
	if !errors.Is(err, ErrAlertPredatesRevision) || !strings.Contains(detail, "before revision") || !strings.Contains(detail, "fingerprint f1") {
		t.Fatalf("Ask = %q, %v; want ErrAlertPredatesRevision naming the revision", detail, err)
	}
	f.waitJobs(t)
	if w := f.c.Writes()[before:]; len(w) != 0 {
		t.Fatalf("writes for an alert older than the revision: %v", w)
	}
	pages := f.q.ofKind(notify.KindCannotRollback)
	if len(pages) != 1 || !strings.Contains(pages[0].Summary, "alert-predates-revision") || !strings.Contains(pages[0].Summary, "SecurityRollback") {
		t.Fatalf("pages %v, want one cannot_rollback naming the alert", f.q.kinds())
	}
	by := pages[0].Details.Requester
	if by == nil || by.Kind != notify.RequestedByAlertmanager || by.Fingerprint != "f1" || by.Labels["rollguard_target"] != "pggit-api" {
		t.Errorf("page requester %+v, want the alert", by)
	}
	// Sent again: the same firing, not a new request, not a new page.
	if _, err := f.r.Ask(ctx, alertAsk("f1", f.now.Add(-time.Minute))); !errors.Is(err, ErrAlreadyTakenUp) {
		t.Fatalf("repeat: err = %v, want ErrAlreadyTakenUp", err)
	}
	if n := len(f.q.ofKind(notify.KindCannotRollback)); n != 1 {
		t.Errorf("%d pages after the repeat, want 1", n)
	}

	// An alert that began after the deploy is about it.
	detail, err = f.r.Ask(ctx, alertAsk("f2", f.now.Add(time.Second)))
	if err != nil || !strings.HasPrefix(detail, "accepted") {
		t.Fatalf("alert after the deploy = %q, %v; want accepted", detail, err)
	}
	f.waitJobs(t)
	if got := image(f.c); got != "pggit-api:v1.1.0" {
		t.Errorf("image %s, want the previous revision back", got)
	}
}

// TestAlertRepeatIsOneRequest: repeats of a firing alert are not new
// requests, whatever happened since (here a fix deployed after the
// rollback); after it resolved, the same labels firing again are.
func TestAlertRepeatIsOneRequest(t *testing.T) {
	log := &memAlertLog{}
	f, start := takeUpAlert(t, log)
	ctx := context.Background()
	if got := image(f.c); got != "pggit-api:v1.0.3" {
		t.Fatalf("image %s after the alert, want v1.0.3", got)
	}
	if e, ok := log.get("fp"); !ok || !e.Done || !strings.Contains(e.Outcome, "succeeded") {
		t.Fatalf("alert log entry %+v, want done and succeeded", e)
	}
	for _, e := range f.q.events {
		by := e.Details.Requester
		if by == nil || by.Fingerprint != "fp" || !by.StartsAt.Equal(start) || by.Name != "SecurityRollback" {
			t.Fatalf("%s event requester %+v, want the alert", e.Kind, e.Details.Requester)
		}
	}

	f.now = f.now.Add(time.Minute)
	f.deployAt(f.now, "pggit-api:v1.1.1")
	before := len(f.c.Writes())
	// A new leader (another replica) gets the repeat.
	f.endTerm(t)
	f.lead(t)
	if _, err := f.r.Ask(ctx, alertAsk("fp", start)); !errors.Is(err, ErrAlreadyTakenUp) {
		t.Fatalf("repeat on the next leader: err = %v, want ErrAlreadyTakenUp", err)
	}
	f.waitJobs(t)
	if w := f.c.Writes()[before:]; len(w) != 0 {
		t.Fatalf("the repeat wrote: %v", w)
	}

	f.r.Resolved(ctx, []string{"fp"})
	if _, ok := log.get("fp"); ok {
		t.Fatal("resolved alert still remembered")
	}
	f.now = f.now.Add(time.Hour) // past the cooldown
	if detail, err := f.r.Ask(ctx, alertAsk("fp", f.now)); err != nil {
		t.Fatalf("the alert firing again after it resolved: %q, %v; want a new request", detail, err)
	}
}

// TestAlertAcceptedThenLeaderStopped: the leader answered 200 and stopped
// before the plan began; the next leader takes the request up.
func TestAlertAcceptedThenLeaderStopped(t *testing.T) {
	log := &memAlertLog{m: map[string]AlertEntry{}}
	f := newFixtureWith(t, Target{}, guard.Options{MaxResumeAge: time.Hour}, fixtureOpts{follower: true})
	f.r.opts.Alerts = log
	log.m["fp"] = AlertEntry{Target: "pggit-api", Action: ActionRollback, Reason: "alertmanager SecurityRollback", Name: "SecurityRollback",
		StartsAt: f.now.Add(-time.Second), At: f.now}
	f.now = f.now.Add(5 * time.Second)
	f.lead(t)
	f.waitJobs(t)
	if got := image(f.c); got != "pggit-api:v1.0.3" {
		t.Fatalf("image %s, want the accepted request acted on by the next leader", got)
	}
	if e, _ := log.get("fp"); !e.Done {
		t.Errorf("entry %+v, want done", e)
	}
}

func TestAskNotLeader(t *testing.T) {
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{follower: true})
	for _, a := range []Ask{alertAsk("f", f.now), {Target: "pggit-api", Action: ActionRollback, Reason: "x"}} {
		if _, err := f.r.Ask(context.Background(), a); !errors.Is(err, ErrNotLeader) {
			t.Errorf("follower: err = %v, want ErrNotLeader", err)
		}
	}
	// Not taken up: the leader gets it as a new request.
	f.lead(t)
	if _, err := f.r.Ask(context.Background(), alertAsk("f", f.now)); err != nil {
		t.Errorf("leader: err = %v", err)
	}
}

func TestRejectPagesOnce(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{})
	by := notify.Requester{Name: "SecurityRollback", Fingerprint: "f9", Labels: map[string]string{"rollguard_target": "coredns"}}
	for range 2 {
		f.r.Reject(by, "coredns", true, `alerts[0].labels.rollguard_target "coredns": not a configured target`)
	}
	pages := f.q.ofKind(notify.KindCannotRollback)
	if len(pages) != 1 {
		t.Fatalf("%d pages, want 1", len(pages))
	}
	p := pages[0]
	if p.Severity != notify.SeverityCritical || p.IncidentID != "unconfigured_coredns_alert-f9" ||
		!strings.Contains(p.Summary, "cannot act on alert SecurityRollback (fingerprint f9)") || !strings.Contains(p.Summary, "not a configured target") {
		t.Errorf("page %+v", p)
	}
}

// TestAlertPageIsItsOwnIncident: an alert asking for a page is one
// incident per alert firing, done once paged (a new leader does not page
// it again).
func TestAlertPageIsItsOwnIncident(t *testing.T) {
	log := &memAlertLog{}
	f := newFixtureWith(t, Target{}, guard.Options{MaxResumeAge: time.Hour}, fixtureOpts{follower: true})
	f.r.opts.Alerts = log
	f.lead(t)
	for _, fp := range []string{"p1", "p2"} {
		a := alertAsk(fp, f.now)
		a.Action = ActionPage
		if detail, err := f.r.Ask(context.Background(), a); err != nil || detail != "paged" {
			t.Fatalf("Ask = %q, %v", detail, err)
		}
	}
	pages := f.q.ofKind(notify.KindDetected)
	if len(pages) != 2 || pages[0].IncidentID == pages[1].IncidentID || pages[0].IncidentID != "production_pggit-api_alert-p1" {
		t.Fatalf("pages %+v, want one incident per alert", pages)
	}
	f.endTerm(t)
	f.lead(t)
	if n := len(f.q.ofKind(notify.KindDetected)); n != 2 {
		t.Errorf("%d pages after a new term, want the 2 already sent", n)
	}
}

// gatedAlertLog is a memAlertLog whose Load waits for gate (when set).
type gatedAlertLog struct {
	memAlertLog
	gate chan struct{}
}

func (l *gatedAlertLog) Load(ctx context.Context) (map[string]AlertEntry, error) {
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return l.memAlertLog.Load(ctx)
}

// TestAlertNotJudgedBeforeTheTermLoadedTheAlertsTakenUp: a new leader that
// has not yet read the alerts taken up cannot tell a repeat from a new
// alert, so it does not judge one (ErrUnavailable: Alertmanager sends it
// again); once they are read, the repeat is known. Before, the repeat that
// arrived in between was judged as a new request.
func TestAlertNotJudgedBeforeTheTermLoadedTheAlertsTakenUp(t *testing.T) {
	log := &gatedAlertLog{}
	f, start := takeUpAlert(t, log)
	ctx := context.Background()
	f.endTerm(t)

	log.gate = make(chan struct{})
	f.startTerm(t) // the term has begun; its Load waits
	before := len(f.c.Writes())
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := f.r.Ask(short, alertAsk("fp", start))
	cancel()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("repeat before the alerts taken up are read: err = %v, want ErrUnavailable", err)
	}
	// Asked while the read is under way, it waits for it.
	answered := make(chan error, 1)
	go func() { _, err := f.r.Ask(ctx, alertAsk("fp", start)); answered <- err }()
	time.Sleep(20 * time.Millisecond)
	close(log.gate)
	if err := <-answered; !errors.Is(err, ErrAlreadyTakenUp) {
		t.Fatalf("repeat asked during the read: err = %v, want ErrAlreadyTakenUp", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := f.r.Ask(ctx, alertAsk("fp", start))
		if errors.Is(err, ErrAlreadyTakenUp) {
			break
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("repeat after the alerts taken up were read: err = %v, want ErrAlreadyTakenUp", err)
		}
		time.Sleep(time.Millisecond)
	}
	f.waitJobs(t)
	if w := f.c.Writes()[before:]; len(w) != 0 {
		t.Fatalf("the repeat wrote: %v", w)
	}
}

// takeUpAlert leads a term with log as its AlertLog and takes up the alert
// "fp" firing since start (a second after the fixture's now) to the end.
func takeUpAlert(t *testing.T, log AlertLog) (*fixture, time.Time) {
	t.Helper()
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{follower: true})
	f.r.opts.Alerts = log
	f.lead(t)
	start := f.now.Add(time.Second)
	if _, err := f.r.Ask(context.Background(), alertAsk("fp", start)); err != nil {
		t.Fatal(err)
	}
	f.waitJobs(t)
	return f, start
}
