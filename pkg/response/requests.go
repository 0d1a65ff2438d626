package response

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Errors of a request, for the API to branch on.
var (
	// ErrNotLeader: this replica does not lead now; the request must go
	// to the leader (or be sent again).
	ErrNotLeader = errors.New("not the leader")
	// ErrUnavailable: the request could not be judged now (the cluster
	// could not be read, the queue is full); nothing was done, and the
	// same request may be sent again.
	ErrUnavailable = errors.New("cannot take the request now")
	// ErrAlertPredatesRevision: the alert began before the current
	// revision was deployed, so it is not about it; a human was paged.
	ErrAlertPredatesRevision = errors.New("alert predates the revision")
	// ErrAlreadyTakenUp: the alert (its fingerprint, in the same firing)
	// was taken up before; a repeat is not a new request.
	ErrAlreadyTakenUp = errors.New("alert already taken up")
)

// AlertRef is the Alertmanager alert behind a request.
type AlertRef struct {
	Fingerprint string
	StartsAt    time.Time
	Name        string
	Labels      map[string]string
}

// Ask is an action asked for from outside the evaluator: a human through
// the API or an Alertmanager alert.
type Ask struct {
	Target   string
	Action   string
	Reason   string
	Security bool
	// By is who asked; its Reason and At are filled in.
	By notify.Requester
	// Alert is the alert that asked (nil for a human).
	Alert *AlertRef
}

// Ask checks the interlocks now so the caller gets the verdict; the plan
// runs in the background. Only a leader takes requests (ErrNotLeader).
//
// An alert is one request for the revision it was about: a repeat of an
// alert already taken up (same fingerprint, same startsAt, not resolved
// since) is not a new request (ErrAlreadyTakenUp), and an alert that
// began before the current revision was deployed is not applied to it
// (ErrAlertPredatesRevision, and a human is paged), as a trigger's
// evidence that predates the revision is no evidence against it.
func (r *Responder) Ask(ctx context.Context, a Ask) (string, error) {
	if a.Action == "" {
		a.Action = ActionRollback
	}
	j := job{target: a.Target, action: a.Action, reason: a.Reason, security: a.Security, alert: a.Alert, by: a.By.Clone()}
	j.by.Reason, j.by.At = a.Reason, r.opts.Now()
	if a.Alert == nil {
		return r.request(ctx, j)
	}
	j.by.Kind = notify.RequestedByAlertmanager
	j.by.Name, j.by.Fingerprint, j.by.StartsAt, j.by.Labels = a.Alert.Name, a.Alert.Fingerprint, a.Alert.StartsAt, maps.Clone(a.Alert.Labels)
	if a.Alert.StartsAt.IsZero() {
		// Alertmanager always sends startsAt; a payload made by hand
		// without one is about now.
		j.alert.StartsAt = j.by.At
		j.by.StartsAt = j.by.At
	}
	if !r.Leading() {
		return "", fmt.Errorf("target %q: %w", a.Target, ErrNotLeader)
	}
	if !r.waitAlertsRead(ctx) {
		// A term that has not read the alerts taken up would take a
		// repeat for a new request: not judged (Alertmanager sends it
		// again).
		return "", fmt.Errorf("target %q: the leader has not read the alerts taken up yet: %w", a.Target, ErrUnavailable)
	}
	prev, taken := r.takeAlert(j)
	if !taken {
		return prev.describe(), fmt.Errorf("%s: %w", prev.describe(), ErrAlreadyTakenUp)
	}
	detail, err := r.request(ctx, j)
	switch {
	case errors.Is(err, ErrNotLeader) || errors.Is(err, ErrUnavailable):
		// Not judged: the same alert sent again is a new attempt.
		r.forgetAlert(j.alert.Fingerprint)
	case err != nil:
		// Judged and refused (an interlock, the revision, an unknown
		// action): that was the request's outcome.
		r.alertDone(j, Outcome{Result: ResultBlocked, Detail: detail})
	}
	return detail, err
}

// alertPredates pages that an alert is not applied to the current
// revision, once per alert and revision, and returns why.
func (r *Responder) alertPredates(j job, t Target, info revisionInfo) string {
	a := j.alert
	detail := fmt.Sprintf("alert %s (fingerprint %s) firing since %s, before revision %s was deployed at %s: it is not about this revision, which is left alone",
		a.Name, a.Fingerprint, a.StartsAt.UTC().Format(time.RFC3339), info.revision, info.deployedAt.UTC().Format(time.RFC3339))
	r.log.Info("alert predates the current revision: not acting on it", zap.String("target", t.Name), zap.String("alert", a.Name),
		zap.String("fingerprint", a.Fingerprint), zap.Time("startsAt", a.StartsAt), zap.Time("deployedAt", info.deployedAt),
		zap.String("revision", info.revision))
	r.cannotOnce(j, t, info, "alert-predates-revision", detail, t.Name+"|"+info.revision+"|alert|"+a.Fingerprint)
	return detail
}

// Reject pages about an alert rollguard cannot act on (an unknown target
// or action): Alertmanager does not retry it, so a human must learn that
// the rollback it asked for did not happen. targetName is the alert's
// rollguard_target; why names the label and value.
func (r *Responder) Reject(by notify.Requester, targetName string, security bool, why string) {
	by = by.Clone()
	by.Kind, by.At = notify.RequestedByAlertmanager, r.opts.Now()
	key := "rejected|" + by.Fingerprint + "|" + why
	now := r.opts.Now()
	r.mu.Lock()
	last, seen := r.pageOnce[key]
	if !seen || now.Sub(last) > 24*time.Hour {
		r.pageOnce[key] = now
	}
	r.mu.Unlock()
	if seen && now.Sub(last) <= 24*time.Hour {
		return
	}
	nt := notify.Target{Namespace: "unconfigured", Deployment: targetName}
	if t, ok := r.target(targetName); ok {
		nt = r.notifyTarget(t)
	}
	sev := notify.SeverityError
	if security {
		sev = notify.SeverityCritical
	}
	by.Reason = why
	summary := fmt.Sprintf("rollguard cannot act on alert %s (fingerprint %s): %s", by.Name, by.Fingerprint, why)
	r.queue.Enqueue(notify.Event{
		Kind: notify.KindCannotRollback, Time: now, Target: nt, IncidentID: notify.IncidentID(nt, "alert-"+by.Fingerprint),
		Severity: sev, Security: security, Summary: summary,
		Details: notify.Details{Reason: "rejected-alert: " + why, Requester: &by},
	})
	r.log.Warn("alert rejected", zap.String("alert", by.Name), zap.String("fingerprint", by.Fingerprint), zap.String("reason", why))
}

// Resolved ends the requests of alerts that resolved: the same labels
// firing again later are a new request.
func (r *Responder) Resolved(ctx context.Context, fingerprints []string) {
	changed := false
	r.alerts.mu.Lock()
	for _, fp := range fingerprints {
		if _, ok := r.alerts.entries[fp]; ok {
			delete(r.alerts.entries, fp)
			changed = true
		}
	}
	r.alerts.mu.Unlock()
	if changed {
		r.saveAlerts(ctx)
	}
}

// AlertEntry is one alert taken up, as the AlertLog keeps it.
type AlertEntry struct {
	Target   string            `json:"target"`
	Action   string            `json:"action"`
	Reason   string            `json:"reason,omitempty"`
	Security bool              `json:"security,omitempty"`
	Name     string            `json:"name,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	StartsAt time.Time         `json:"startsAt"`
	// At is when it was taken up; Done once its job ended, with Outcome.
	At      time.Time `json:"at"`
	Done    bool      `json:"done,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
}

func (e AlertEntry) describe() string {
	s := fmt.Sprintf("alert %s firing since %s was taken up at %s", e.Name, e.StartsAt.UTC().Format(time.RFC3339), e.At.UTC().Format(time.RFC3339))
	if e.Done {
		return s + ": " + e.Outcome
	}
	return s + ": in progress"
}

// AlertLog keeps the alerts taken up (by fingerprint) where the next
// leader finds them.
type AlertLog interface {
	Load(ctx context.Context) (map[string]AlertEntry, error)
	Save(ctx context.Context, entries map[string]AlertEntry) error
}

// MaxAlertEntries bounds the alerts remembered; the oldest go first.
const MaxAlertEntries = 1000

type alertState struct {
	mu      sync.Mutex
	entries map[string]AlertEntry
	version int64
	// saveMu orders the saves; saved is the version last stored.
	saveMu sync.Mutex
	saved  int64
}

// takeAlert records j's alert as taken up unless the same firing of it
// was already; then it returns that one.
func (r *Responder) takeAlert(j job) (AlertEntry, bool) {
	a := j.alert
	s := &r.alerts
	s.mu.Lock()
	if s.entries == nil {
		s.entries = map[string]AlertEntry{}
	}
	if prev, ok := s.entries[a.Fingerprint]; ok && prev.StartsAt.Equal(a.StartsAt) {
		s.mu.Unlock()
		r.log.Info("alert already taken up: not a new request", zap.String("alert", a.Name), zap.String("fingerprint", a.Fingerprint),
			zap.Time("startsAt", a.StartsAt), zap.Time("takenUp", prev.At))
		return prev, false
	}
	// A different startsAt is a new firing whose resolve was missed.
	e := AlertEntry{Target: j.target, Action: j.action, Reason: j.reason, Security: j.security,
		Name: a.Name, Labels: maps.Clone(a.Labels), StartsAt: a.StartsAt, At: j.by.At}
	if j.action == ActionPage {
		// A page is sent at once, into the durable outbox: taken up is
		// done (and a new leader does not page it again).
		e.Done, e.Outcome = true, "paged"
	}
	s.entries[a.Fingerprint] = e
	s.mu.Unlock()
	r.saveAlerts(context.Background())
	return AlertEntry{}, true
}

func (r *Responder) forgetAlert(fp string) {
	r.alerts.mu.Lock()
	delete(r.alerts.entries, fp)
	r.alerts.mu.Unlock()
	r.saveAlerts(context.Background())
}

// alertDone records how the request of j's alert ended.
func (r *Responder) alertDone(j job, out Outcome) {
	if j.alert == nil {
		return
	}
	s := &r.alerts
	s.mu.Lock()
	e, ok := s.entries[j.alert.Fingerprint]
	if !ok || !e.StartsAt.Equal(j.alert.StartsAt) || e.Done {
		s.mu.Unlock()
		return
	}
	e.Done, e.Outcome = true, out.Detail
	if e.Outcome == "" {
		e.Outcome = string(out.Result)
	}
	s.entries[j.alert.Fingerprint] = e
	s.mu.Unlock()
	r.saveAlerts(context.Background())
}

// saveAlerts stores the alerts taken up, pruned to AlertMemory and
// MaxAlertEntries. A failure is logged: a request is never refused
// because its bookkeeping could not be written.
func (r *Responder) saveAlerts(ctx context.Context) {
	log := r.opts.Alerts
	if log == nil {
		return
	}
	s := &r.alerts
	s.mu.Lock()
	now := r.opts.Now()
	for fp, e := range s.entries {
		if now.Sub(e.At) > r.opts.AlertMemory {
			delete(s.entries, fp)
		}
	}
	if n := len(s.entries); n > MaxAlertEntries {
		fps := slices.SortedFunc(maps.Keys(s.entries), func(a, b string) int { return s.entries[a].At.Compare(s.entries[b].At) })
		for _, fp := range fps[:n-MaxAlertEntries] {
			delete(s.entries, fp)
		}
	}
	s.version++
	v := s.version
	s.mu.Unlock()

	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if v <= s.saved {
		return // stored by a save that began after this change
	}
	// Group commit: whoever gets to save stores everything changed so
	// far, so the callers that waited meanwhile find their change stored.
	s.mu.Lock()
	v, snap := s.version, maps.Clone(s.entries)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.ReadTimeout)
	defer cancel()
	if err := log.Save(ctx, snap); err != nil {
		r.log.Warn("alerts taken up not stored; a repeat may be taken for a new request after a leader change", zap.Error(err))
		return
	}
	s.saved = v
}

// takeUpAlerts, at the start of a term, loads the alerts taken up and
// runs again the requests a previous leader accepted but did not finish
// (it answered 200, then stopped before the plan began).
func (r *Responder) takeUpAlerts(ctx context.Context) {
	log := r.opts.Alerts
	if log == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
	entries, err := log.Load(rctx)
	cancel()
	if err != nil {
		r.log.Warn("cannot read the alerts taken up; repeats of them may be taken for new requests", zap.Error(err))
	}
	s := &r.alerts
	s.mu.Lock()
	if entries == nil {
		entries = map[string]AlertEntry{}
	}
	// What this process took up while it followed is not lost.
	for fp, e := range s.entries {
		if _, ok := entries[fp]; !ok {
			entries[fp] = e
		}
	}
	s.entries = entries
	var unfinished []string
	for fp, e := range entries {
		if !e.Done && r.opts.Now().Sub(e.At) < r.guard.Options().MaxResumeAge {
			unfinished = append(unfinished, fp)
		}
	}
	slices.SortFunc(unfinished, func(a, b string) int { return entries[a].At.Compare(entries[b].At) })
	s.mu.Unlock()
	for _, fp := range unfinished {
		r.retakeAlert(ctx, fp)
	}
}

// retakeAlert runs again an accepted alert request unless the target's
// journal shows a run that began after it (it was acted on).
func (r *Responder) retakeAlert(ctx context.Context, fp string) {
	r.alerts.mu.Lock()
	e := r.alerts.entries[fp]
	r.alerts.mu.Unlock()
	t, ok := r.target(e.Target)
	if !ok {
		return
	}
	ref := &AlertRef{Fingerprint: fp, StartsAt: e.StartsAt, Name: e.Name, Labels: e.Labels}
	j := job{target: e.Target, action: e.Action, reason: e.Reason, security: e.Security, manual: true, severity: t.Severity, alert: ref,
		by: notify.Requester{Kind: notify.RequestedByAlertmanager, Name: e.Name, Reason: e.Reason, At: e.At, Fingerprint: fp,
			StartsAt: e.StartsAt, Labels: maps.Clone(e.Labels)}}
	rctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
	last, err := r.exec.LastRun(rctx, t.Rollback.Namespace, t.Rollback.Deployment)
	cancel()
	if err == nil && last != nil && !last.Started.Before(e.At) {
		r.alertDone(j, Outcome{Result: ResultNothing, Detail: "acted on by run " + last.RunID})
		return
	}
	r.log.Info("taking up an alert request the previous leader accepted but did not finish", zap.String("target", e.Target),
		zap.String("alert", e.Name), zap.String("fingerprint", fp))
	if !r.enqueue(j) {
		r.log.Error("alert request dropped: responder queue full", zap.String("target", e.Target), zap.String("fingerprint", fp))
	}
}

// dropAlerts forgets the in-memory alerts at the end of a term: the next
// term reads them back from the AlertLog, which another leader may have
// changed meanwhile.
func (r *Responder) dropAlerts() {
	if r.opts.Alerts == nil {
		return
	}
	r.alerts.mu.Lock()
	r.alerts.entries = nil
	r.alerts.mu.Unlock()
}
