// Package incident keeps the record of each incident rollguard handles:
// the runbook's timeline (deploy seen, breach started, detected, rollback
// initiated, each step, previous version restored, system stable), the
// evidence that fired the trigger, the steps' results, the data integrity
// check, the recovery checklist and the email escalation text.
//
// The record is a fold of the notify.Event stream (Apply), so the same
// events that page humans also document the incident, and a Slack message
// can be rendered from exactly what the record says.
package incident

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Status of an incident.
type Status string

// Statuses.
const (
	StatusDetected       Status = "detected"
	StatusInProgress     Status = "in_progress"
	StatusResolved       Status = "resolved"
	StatusFailed         Status = "failed"
	StatusCannotRollback Status = "cannot_rollback"
	StatusDryRun         Status = "dry_run"
	StatusBlind          Status = "blind"
	// StatusUnverified: rolled back, but verify had no data to judge the
	// recovery by; a human checks.
	StatusUnverified Status = "unverified"
)

// Entry is one line of the timeline.
type Entry struct {
	Time time.Time `json:"time"`
	What string    `json:"what"`
}

// Evidence is what made the trigger fire.
type Evidence struct {
	Query     string          `json:"query,omitempty"`
	Threshold float64         `json:"threshold"`
	Op        string          `json:"op,omitempty"`
	Window    string          `json:"window,omitempty"`
	Samples   []notify.Sample `json:"samples,omitempty"`
}

// StepResult is one step of the plan.
type StepResult = notify.StepResult

// DataIntegrity is the runbook's post-rollback data check.
type DataIntegrity = notify.DataIntegrity

// ChecklistItem is one line of the runbook's recovery checklist.
type ChecklistItem struct {
	Item string `json:"item"`
	Done bool   `json:"done"`
	// Note is what rollguard knows about it; it never ticks an item a
	// human has to do.
	Note string `json:"note,omitempty"`
}

// Record is the incident.
type Record struct {
	ID              string          `json:"id"`
	Target          string          `json:"target"`
	Cluster         string          `json:"cluster,omitempty"`
	Namespace       string          `json:"namespace"`
	Deployment      string          `json:"deployment"`
	Trigger         string          `json:"trigger,omitempty"`
	Severity        notify.Severity `json:"severity"`
	Security        bool            `json:"security,omitempty"`
	Status          Status          `json:"status"`
	Summary         string          `json:"summary,omitempty"`
	BadVersion      string          `json:"badVersion,omitempty"`
	RestoredVersion string          `json:"restoredVersion,omitempty"`
	Strategy        string          `json:"strategy,omitempty"`
	Plan            []string        `json:"plan,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	Error           string          `json:"error,omitempty"`

	OpenedAt  time.Time `json:"openedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Milestones of the runbook's timeline; zero when not reached.
	DeployedAt        time.Time `json:"deployedAt,omitzero"`
	BreachStartedAt   time.Time `json:"breachStartedAt,omitzero"`
	DetectedAt        time.Time `json:"detectedAt,omitzero"`
	RollbackStartedAt time.Time `json:"rollbackStartedAt,omitzero"`
	RestoredAt        time.Time `json:"restoredAt,omitzero"`
	StableAt          time.Time `json:"stableAt,omitzero"`

	Timeline     []Entry      `json:"timeline"`
	Evidence     Evidence     `json:"evidence"`
	Steps        []StepResult `json:"steps,omitempty"`
	Verification string       `json:"verification,omitempty"`
	// LeftBehind is, for a stopped rollback, the Deployment as the run
	// left it and what a human must decide.
	LeftBehind string `json:"leftBehind,omitempty"`
	// DataIntegrity is nil when it was not checked.
	DataIntegrity     *DataIntegrity  `json:"dataIntegrity,omitempty"`
	RecoveryChecklist []ChecklistItem `json:"recoveryChecklist"`
	EmailEscalation   string          `json:"emailEscalation,omitempty"`
	// Requests is the audit trail: who asked for an action on this
	// incident and why (the trigger, the Alertmanager alert with its
	// fingerprint and labels, the human caller), in the order they asked.
	Requests []notify.Requester `json:"requests,omitempty"`
	// Omitted counts what the size bound cut, by field (Bound).
	Omitted map[string]int `json:"omitted,omitempty"`
}

// RecoveryChecklist is the runbook's "After Rollback, Complete These".
func RecoveryChecklist() []ChecklistItem {
	items := []string{
		"Notify all stakeholders (Slack, email, status page)",
		"Verify all systems operational",
		"Check for data loss or corruption",
		"Document what happened (incident report)",
		"Identify root cause",
		"Create fix in new branch",
		"Test fix in staging environment",
		"Get code review approval (2+ engineers)",
		"Schedule redeploy (after team agreement)",
		"Hold post-mortem meeting within 24 hours",
		"Update deployment procedures based on learnings",
		"Close incident ticket",
	}
	out := make([]ChecklistItem, len(items))
	for i, it := range items {
		out[i] = ChecklistItem{Item: it}
	}
	return out
}

// Apply folds e into r. It is idempotent (a redelivered event changes
// nothing) so at-least-once delivery cannot duplicate timeline lines.
func Apply(r *Record, e notify.Event) {
	if r.ID == "" {
		r.ID = e.IncidentID
		r.OpenedAt = e.Time
		r.Status = StatusDetected
		r.Severity = notify.SeverityCritical
		r.RecoveryChecklist = RecoveryChecklist()
	}
	if r.OpenedAt.IsZero() || (!e.Time.IsZero() && e.Time.Before(r.OpenedAt)) {
		r.OpenedAt = e.Time
	}
	if e.Time.After(r.UpdatedAt) {
		r.UpdatedAt = e.Time
	}
	r.Target = e.Target.String()
	r.Cluster, r.Namespace, r.Deployment = e.Target.Cluster, e.Target.Namespace, e.Target.Deployment
	if e.Trigger != "" {
		r.Trigger = e.Trigger
	}
	if e.Severity.Valid() && e.Kind != notify.KindStepStarted && e.Kind != notify.KindStepFinished {
		r.Severity = e.Severity
	}
	r.Security = r.Security || e.Security
	applyDetails(r, e.Details)
	if q := e.Details.Requester; q != nil {
		r.request(*q)
	}

	switch e.Kind {
	case notify.KindDetected:
		r.DetectedAt = first(r.DetectedAt, e.Time)
		r.setSummary(e)
		r.add(e.Time, fmt.Sprintf("%s detected: %s", r.triggerName(), summaryOf(e)))
	case notify.KindRollbackStarted:
		r.RollbackStartedAt = first(r.RollbackStartedAt, e.Time)
		r.advance(StatusInProgress)
		what := "Rollback initiated"
		if e.Details.Resumed {
			// The run outlived the rollguard that started it.
			what = "Rollback resumed after rollguard restarted or lost its lease mid-plan"
			if id := e.Details.RunID; id != "" {
				what += " (run " + id + ")"
			}
		}
		if r.Strategy != "" {
			what += " (strategy " + r.Strategy + ")"
		}
		if r.RestoredVersion != "" {
			what += " to " + r.RestoredVersion
		}
		r.add(e.Time, what)
	case notify.KindStepStarted:
		name := e.Details.Step
		r.advance(StatusInProgress)
		r.step(name, func(s *StepResult) { s.Started = first(s.Started, e.Time) })
		r.add(e.Time, "Step "+name+" started")
	case notify.KindStepFinished:
		name := e.Details.Step
		outcome := e.Details.StepOutcome
		if outcome == "" {
			outcome = notify.OutcomeOK
		}
		errText := e.Details.StepError
		detail := e.Details.StepDetail
		r.step(name, func(s *StepResult) {
			if s.Started.IsZero() {
				s.Started = e.Time
			}
			s.Finished, s.Outcome, s.Error = e.Time, outcome, errText
			if detail != "" {
				s.Detail = detail
			}
		})
		what := "Step " + name + " finished: " + outcome
		if errText != "" {
			what += ": " + errText
		} else if detail != "" {
			what += " (" + detail + ")"
		}
		r.add(e.Time, what)
		switch e.Details.Milestone {
		case notify.MilestoneRestored:
			r.restored(e.Time)
		case notify.MilestoneStable:
			r.restored(e.Time)
			r.stable(e.Time)
		}
	case notify.KindRollbackSucceeded:
		// Success means the plan's verification passed: the service is
		// back on the previous version and stable, whether or not the
		// steps marked those milestones.
		r.restored(e.Time)
		r.stable(e.Time)
		r.Status = StatusResolved
		r.add(e.Time, "Rollback succeeded")
	case notify.KindRollbackUnverified:
		// The previous version runs; nothing says the service recovered.
		r.restored(e.Time)
		r.Status = StatusUnverified
		r.add(e.Time, "Rollback done, UNVERIFIED: "+orDefault(r.Verification, summaryOf(e)))
	case notify.KindRollbackFailed:
		r.Status = StatusFailed
		r.add(e.Time, "Rollback FAILED: "+orDefault(r.Error, summaryOf(e)))
		if r.LeftBehind != "" {
			r.add(e.Time, "Left behind: "+r.LeftBehind)
		}
	case notify.KindCannotRollback:
		r.DetectedAt = first(r.DetectedAt, e.Time)
		r.setSummary(e)
		r.Status = StatusCannotRollback
		r.add(e.Time, "Cannot roll back: "+orDefault(r.Reason, summaryOf(e)))
	case notify.KindWouldRollback:
		r.DetectedAt = first(r.DetectedAt, e.Time)
		r.setSummary(e)
		r.advance(StatusDryRun)
		what := "Dry-run: would roll back"
		if len(r.Plan) > 0 {
			what += " (plan: " + strings.Join(r.Plan, ", ") + ")"
		}
		r.add(e.Time, what)
	case notify.KindBlind:
		r.advance(StatusBlind)
		r.add(e.Time, r.triggerName()+" has no data: rollguard is blind")
	}
	r.updateChecklist()
}

// request adds q to the audit trail unless it is there.
func (r *Record) request(q notify.Requester) {
	key := q.Key()
	for _, have := range r.Requests {
		if have.Key() == key {
			return
		}
	}
	r.Requests = append(r.Requests, q.Clone())
}

func (r *Record) triggerName() string {
	if r.Trigger == "" {
		return "Trigger"
	}
	return "Trigger " + r.Trigger
}

func (r *Record) setSummary(e notify.Event) {
	if r.Summary == "" {
		r.Summary = summaryOf(e)
	}
}

// advance moves the status forward only: a late step event must not
// reopen a resolved or failed incident.
func (r *Record) advance(s Status) {
	switch r.Status {
	case StatusResolved, StatusFailed, StatusCannotRollback, StatusUnverified:
		return
	case StatusInProgress:
		if s == StatusDryRun || s == StatusBlind || s == StatusDetected {
			return
		}
	}
	r.Status = s
}

func (r *Record) restored(t time.Time) {
	if !r.RestoredAt.IsZero() {
		return
	}
	r.RestoredAt = t
	what := "Previous version restored"
	if r.RestoredVersion != "" {
		what = "Previous version " + r.RestoredVersion + " restored"
	}
	r.add(t, what)
}

func (r *Record) stable(t time.Time) {
	if !r.StableAt.IsZero() {
		return
	}
	r.StableAt = t
	what := "System stable"
	if r.Evidence.Query != "" && r.Evidence.Op != "" {
		what += fmt.Sprintf(", %s back %s %s", r.triggerName(), opposite(r.Evidence.Op), fmtFloat(r.Evidence.Threshold))
	}
	r.add(t, what)
}

func opposite(op string) string {
	switch op {
	case "above":
		return "below"
	case "below":
		return "above"
	}
	return "within"
}

// add appends a timeline entry unless the same one is there, keeping the
// timeline in time order.
func (r *Record) add(t time.Time, what string) {
	if t.IsZero() {
		return
	}
	for _, en := range r.Timeline {
		if en.Time.Equal(t) && en.What == what {
			return
		}
	}
	r.Timeline = append(r.Timeline, Entry{Time: t, What: what})
	sort.SliceStable(r.Timeline, func(i, j int) bool { return r.Timeline[i].Time.Before(r.Timeline[j].Time) })
}

func (r *Record) step(name string, f func(*StepResult)) {
	if name == "" {
		return
	}
	for i := range r.Steps {
		if r.Steps[i].Name == name {
			f(&r.Steps[i])
			return
		}
	}
	r.Steps = append(r.Steps, StepResult{Name: name})
	f(&r.Steps[len(r.Steps)-1])
}

func (r *Record) updateChecklist() {
	for i := range r.RecoveryChecklist {
		it := &r.RecoveryChecklist[i]
		switch {
		case strings.HasPrefix(it.Item, "Notify all stakeholders"):
			it.Note = "rollguard paged and posted to Slack; email and status page are yours"
		case strings.HasPrefix(it.Item, "Verify all systems operational") && r.Status == StatusUnverified:
			it.Note = "rollguard could NOT verify the recovery: " + orDefault(r.Verification, "no data")
		case strings.HasPrefix(it.Item, "Verify all systems operational") && r.Status == StatusResolved:
			it.Note = "rollguard verification passed at " + r.StableAt.UTC().Format(time.RFC3339)
			if r.Verification != "" {
				it.Note += ": " + r.Verification
			}
		case strings.HasPrefix(it.Item, "Check for data loss") && r.DataIntegrity != nil:
			it.Note = "rollguard counted " + integrityText(r.DataIntegrity)
		case strings.HasPrefix(it.Item, "Document what happened"):
			it.Note = "this record is the draft: /api/v1/incidents/" + r.ID
		}
	}
}

func applyDetails(r *Record, d notify.Details) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&r.Evidence.Query, d.Query)
	if d.Threshold != nil {
		r.Evidence.Threshold = *d.Threshold
	}
	set(&r.Evidence.Op, d.Op)
	if d.Window != 0 {
		r.Evidence.Window = d.Window.String()
	}
	if len(d.Samples) > 0 {
		r.Evidence.Samples = slices.Clone(d.Samples)
	}
	set(&r.BadVersion, d.BadVersion)
	set(&r.RestoredVersion, d.RestoredVersion)
	set(&r.Strategy, d.Strategy)
	if len(d.Plan) > 0 {
		r.Plan = slices.Clone(d.Plan)
	}
	set(&r.Reason, d.Reason)
	set(&r.Error, d.Error)
	set(&r.Verification, d.Verification)
	set(&r.LeftBehind, d.StateLeftBehind)
	if d.DataIntegrity != nil {
		v := *d.DataIntegrity
		r.DataIntegrity = &v
	}
	if t := d.DeployedAt; !t.IsZero() && r.DeployedAt.IsZero() {
		r.DeployedAt = t
		what := "Deployment seen"
		if r.BadVersion != "" {
			what = "Deployment of " + r.BadVersion + " seen"
		}
		r.add(t, what)
	}
	if t := d.BreachStartedAt; !t.IsZero() && r.BreachStartedAt.IsZero() {
		r.BreachStartedAt = t
		what := "Breach started"
		if r.Evidence.Op != "" {
			what = fmt.Sprintf("Breach started (%s %s)", r.Evidence.Op, fmtFloat(r.Evidence.Threshold))
		}
		r.add(t, what)
	}
	// The final events may carry every step's result: they fill what
	// individual step events missed (e.g. rollguard restarted mid-plan).
	for _, s := range d.Steps {
		r.step(s.Name, func(dst *StepResult) {
			if dst.Started.IsZero() {
				dst.Started = s.Started
			}
			if !s.Finished.IsZero() {
				dst.Finished, dst.Outcome, dst.Error = s.Finished, s.Outcome, s.Error
			}
			if s.Detail != "" {
				dst.Detail = s.Detail
			}
		})
		r.add(s.Started, "Step "+s.Name+" started")
		if !s.Finished.IsZero() {
			what := "Step " + s.Name + " finished: " + orDefault(s.Outcome, notify.OutcomeOK)
			if s.Error != "" {
				what += ": " + s.Error
			}
			r.add(s.Finished, what)
		}
	}
}

func first(have, t time.Time) time.Time {
	if have.IsZero() {
		return t
	}
	return have
}

func summaryOf(e notify.Event) string {
	if e.Summary != "" {
		return e.Summary
	}
	return notify.DefaultSummary(e)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func fmtFloat(f float64) string { return fmt.Sprintf("%g", f) }

func integrityText(d *DataIntegrity) string {
	s := fmt.Sprintf("alert_delivery_queue %d rows, %d unresolved replication conflicts", d.AlertDeliveryQueue, d.UnresolvedConflicts)
	if len(d.LatestSchemaVersions) > 0 {
		s += ", latest schema versions " + strings.Join(d.LatestSchemaVersions, ", ")
	}
	return s
}
