package notify

import (
	"encoding/json"
	"fmt"
	"time"
)

// Details is the evidence and progress an Event carries. Producers fill
// what they know; an empty field is absent from the JSON and from every
// page. Copying an Event copies its Details; the slices and pointers in
// it are shared, so never modify what they point at after Enqueue.
//
// The fields are declared in the order of their JSON keys: the keys come
// out sorted, as they did when details were a map, so the outbox, the
// webhook and PagerDuty get the same bytes as before.
type Details struct {
	// BadVersion is the version that went bad, e.g. an image or revision.
	BadVersion string `json:"bad_version,omitempty"`
	// BreachStartedAt is when the trigger's condition first held.
	BreachStartedAt time.Time `json:"breach_started_at,omitzero"`
	// DataIntegrity is the post-rollback data check, on a success.
	DataIntegrity *DataIntegrity `json:"data_integrity,omitempty"`
	// DeployedAt is when the bad ReplicaSet was created.
	DeployedAt time.Time `json:"deployed_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	// GitOps says what owns a GitOps-managed Deployment, what rollguard
	// did to it and what a human must still do in Git.
	GitOps string `json:"gitops,omitempty"`
	// LeftBehind are the steps of a stopped rollback NOT put back.
	LeftBehind []string `json:"left_behind,omitempty"`
	// Milestone is MilestoneRestored or MilestoneStable, on StepFinished.
	Milestone string `json:"milestone,omitempty"`
	// Op is the trigger's direction: "above" or "below".
	Op string `json:"op,omitempty"`
	// Plan is the plan's step names in order.
	Plan []string `json:"plan,omitempty"`
	// Preflight marks the test page preflight sends.
	Preflight bool   `json:"preflight,omitempty"`
	Query     string `json:"query,omitempty"`
	// Reason is why rollguard acts, or why it cannot or did not roll back.
	Reason string `json:"reason,omitempty"`
	// Requester is who asked for the action and why: the trigger, the
	// Alertmanager alert or the human caller.
	Requester       *Requester `json:"requested_by,omitempty"`
	RestoredVersion string     `json:"restored_version,omitempty"`
	// Resumed: the run continues one a crash or a leader change
	// interrupted.
	Resumed bool `json:"resumed,omitempty"`
	// RunID names the rollback run (its journal).
	RunID string `json:"run_id,omitempty"`
	// Samples are the trigger's window.
	Samples []Sample `json:"samples,omitempty"`
	// Since is when a blind trigger last had data.
	Since time.Time `json:"since,omitzero"`
	// StateLeftBehind is, on a stopped rollback, the Deployment as the
	// run left it (images, replicas asked and available) and what a human
	// must decide about it.
	StateLeftBehind string `json:"state_left_behind,omitempty"`
	// Step is the step a step event is about.
	Step string `json:"step,omitempty"`
	// StepDetail is what the finished step did, on StepFinished.
	StepDetail string `json:"step_detail,omitempty"`
	// StepError is why the step failed, on a failed StepFinished.
	StepError string `json:"step_error,omitempty"`
	// StepOutcome is OutcomeOK, OutcomeFailed, OutcomeSkipped or
	// OutcomeUnverified, on StepFinished.
	StepOutcome string `json:"step_result,omitempty"`
	// Steps are every step's result, on the final events.
	Steps []StepResult `json:"steps,omitempty"`
	// Strategy is the plan: quick, revert, full...
	Strategy string `json:"strategy,omitempty"`
	// TargetName is the configured target's name, on the preflight test
	// page.
	TargetName string `json:"target_name,omitempty"`
	// Threshold is the trigger's; nil when no trigger is involved (0 is a
	// threshold).
	Threshold *float64 `json:"threshold,omitempty"`
	// Undone are the steps of a stopped rollback put back.
	Undone []string `json:"undone,omitempty"`
	// Until is when a blind trigger had data again.
	Until time.Time `json:"until,omitzero"`
	// Verification is what verify saw: how long every check held, or why
	// the recovery is unverified.
	Verification string `json:"verification,omitempty"`
	// Window is the trigger's window, written in nanoseconds.
	Window time.Duration `json:"window,omitempty"`
}

// UnmarshalJSON reads details, taking the window as nanoseconds or as a
// duration string ("2m"), which earlier versions may have written.
func (d *Details) UnmarshalJSON(b []byte) error {
	type plain Details
	*d = Details{}
	in := struct {
		*plain
		Window json.RawMessage `json:"window"`
	}{plain: (*plain)(d)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	w, err := window(in.Window)
	if err != nil {
		return err
	}
	d.Window = w
	return nil
}

func window(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		w, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("details.window %q: %w", s, err)
		}
		return w, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("details.window %s: not nanoseconds nor a duration", raw)
	}
	if i, err := n.Int64(); err == nil {
		return time.Duration(i), nil
	}
	f, err := n.Float64()
	if err != nil {
		return 0, fmt.Errorf("details.window %s: %w", raw, err)
	}
	return time.Duration(f), nil
}
