package rollback

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/rollguard/rollguard/pkg/plan"
)

// Journal ConfigMap layout.
const (
	journalPrefix = "rollguard-journal-"
	journalKey    = "journal.json"
	// LabelJournal marks journal ConfigMaps for discovery
	// (kubectl get cm -l rollguard.io/journal=true).
	LabelJournal    = "rollguard.io/journal"
	LabelDeployment = "rollguard.io/deployment"
	labelManagedBy  = "app.kubernetes.io/managed-by"
	journalVersion  = 1
)

// JournalName is the journal ConfigMap of the Deployment with uid: keyed by
// UID so a Deployment deleted and recreated under the same name starts
// clean.
func JournalName(uid types.UID) string { return journalPrefix + string(uid) }

// RunState is a journal's overall state.
type RunState string

// Run states.
const (
	// RunRunning: in flight (or the process died in it): resumed on the
	// next Run.
	RunRunning RunState = "running"
	// RunFailed: a step returned an error; resumed on the next Run (the
	// failed step re-runs only when idempotent).
	RunFailed RunState = "failed"
	// RunAborted: stopped on purpose (concurrent change, unsafe resume);
	// never resumed automatically: a human deletes the journal.
	RunAborted RunState = "aborted"
	// RunSucceeded: done; a second firing for the same revision is a no-op.
	RunSucceeded RunState = "succeeded"
	// RunSuperseded: closed unfinished because the target moved on (a
	// human deployed another template while the run was failed or down);
	// kept in the history, never resumed.
	RunSuperseded RunState = "superseded"
)

// resumable reports whether a run in state s is unfinished and may be
// resumed.
func (s RunState) resumable() bool { return s == RunRunning || s == RunFailed }

// StepState is one step's state.
type StepState string

// Step states.
const (
	StepPending  StepState = "pending"
	StepRunning  StepState = "running"
	StepDone     StepState = "done"
	StepFailed   StepState = "failed"
	StepSkipped  StepState = "skipped"
	StepWouldRun StepState = "would-run" // dry-run only, never journaled
)

// Revision identifies the version that was running when the plan started
// (the bad one for a rollback).
type Revision struct {
	ReplicaSet string                 `json:"replicaSet,omitempty"`
	Hash       string                 `json:"podTemplateHash,omitempty"`
	Revision   int64                  `json:"revision,omitempty"`
	Images     map[string]string      `json:"images,omitempty"`
	Template   corev1.PodTemplateSpec `json:"template"`
	// DeployedAt is when the revision's ReplicaSet was created; zero when
	// the controller had not created it yet.
	DeployedAt time.Time `json:"deployedAt,omitzero"`
}

// Pinned is the target a rollback puts back, fixed before any write.
type Pinned struct {
	// Source is "stable-image" or "previous-revision".
	Source     string                 `json:"source"`
	ReplicaSet string                 `json:"replicaSet,omitempty"`
	Hash       string                 `json:"podTemplateHash,omitempty"`
	Revision   int64                  `json:"revision,omitempty"`
	Images     map[string]string      `json:"images,omitempty"`
	Template   corev1.PodTemplateSpec `json:"template"`
}

// StepRecord is one step in the journal.
type StepRecord struct {
	Name       string     `json:"name"`
	State      StepState  `json:"state"`
	Idempotent bool       `json:"idempotent"`
	Started    *time.Time `json:"started,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	Attempts   int        `json:"attempts,omitempty"`
	Detail     string     `json:"detail,omitempty"`
	Error      string     `json:"error,omitempty"`
	// Intent is the pod template a template-writing step is about to
	// write, journaled before the write so a resume recognises it as ours
	// and re-runs the step as a no-op.
	Intent *corev1.PodTemplateSpec `json:"intent,omitempty"`
	// Path is the file a dump step writes, fixed before it runs so a
	// re-run overwrites the same file.
	Path string `json:"path,omitempty"`
}

// Journal is the record of one plan run on one Deployment.
type Journal struct {
	Version          int        `json:"version"`
	RunID            string     `json:"runID"`
	Namespace        string     `json:"namespace"`
	Deployment       string     `json:"deployment"`
	UID              types.UID  `json:"uid"`
	Action           plan.Name  `json:"action"`
	Reason           string     `json:"reason,omitempty"`
	State            RunState   `json:"state"`
	Error            string     `json:"error,omitempty"`
	Started          time.Time  `json:"started"`
	Finished         *time.Time `json:"finished,omitempty"`
	Bad              Revision   `json:"bad"`
	Pinned           *Pinned    `json:"pinned,omitempty"`
	Replicas         int32      `json:"replicas"`
	MigrationApplied bool       `json:"migrationApplied,omitempty"`
	// Incident is the incident the run belongs to: a resume after a crash
	// or a leader change reports under the same one.
	Incident string `json:"incident,omitempty"`
	// Surge is set when revert raises maxSurge for its rollout.
	Surge *Surge `json:"surge,omitempty"`
	// GitOps is the owner of a GitOps-managed Deployment, found at
	// preflight.
	GitOps *GitOpsRecord `json:"gitops,omitempty"`
	Steps  []StepRecord  `json:"steps"`
	// Undone lists the steps whose effect was put back after the run
	// stopped (DB_READONLY, disabled subscriptions), so that a stopped run
	// leaves neither behind; a resume runs them again.
	Undone []string `json:"undone,omitempty"`
	// LeftBehind says what a stopped run could not put back, for a human.
	LeftBehind []string `json:"leftBehind,omitempty"`
	// StateLeftBehind is the Deployment as a stopped run left it (read
	// live when it stopped) and what a human must decide about it.
	StateLeftBehind *LeftState `json:"stateLeftBehind,omitempty"`
	// Unverified is set when the verify step ran to its end without data
	// to judge by (a source down, too little traffic): the plan is done,
	// but nothing says the service recovered. It says what is known.
	Unverified string `json:"unverified,omitempty"`
	// History summarises the Deployment's earlier runs, newest first: the
	// interlocks are seeded from it after a restart, and the revisions it
	// rolled back are never pinned as a target again.
	History []RunSummary `json:"history,omitempty"`
}

// RunSummary is an earlier run, as kept in a journal's History.
type RunSummary struct {
	RunID    string     `json:"runID"`
	Action   plan.Name  `json:"action"`
	State    RunState   `json:"state"`
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	// BadHash is the pod-template-hash of the revision the run acted on,
	// BadImages its images.
	BadHash   string            `json:"badHash,omitempty"`
	BadImages map[string]string `json:"badImages,omitempty"`
	Incident  string            `json:"incident,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// maxHistory bounds a journal's History: about 200 bytes a run, well
// inside a ConfigMap, and more than an hour's budget of runs.
const maxHistory = 20

func (j *Journal) summary() RunSummary {
	return RunSummary{RunID: j.RunID, Action: j.Action, State: j.State, Started: j.Started, Finished: j.Finished,
		BadHash: j.Bad.Hash, BadImages: j.Bad.Images, Incident: j.Incident, Error: j.Error}
}

// Runs lists the journal's run and its History, newest first.
func (j *Journal) Runs() []RunSummary {
	return append([]RunSummary{j.summary()}, j.History...)
}

// knownBad is what this Deployment's rolling runs judged bad: the
// revisions (pod-template-hash) and their versions (images). Neither is
// ever a rollback target: a template that differs only by what a plan
// added (DB_READONLY, a restart) is still the bad version.
type knownBad struct {
	hashes map[string]bool
	images []map[string]string
}

func (j *Journal) knownBad() knownBad {
	kb := knownBad{hashes: map[string]bool{}}
	for _, s := range j.Runs() {
		if !s.Action.Rolls() {
			continue
		}
		if s.BadHash != "" {
			kb.hashes[s.BadHash] = true
		}
		if len(s.BadImages) > 0 {
			kb.images = append(kb.images, s.BadImages)
		}
	}
	return kb
}

// has reports whether the ReplicaSet with hash and images is known bad.
func (kb knownBad) has(hash string, images map[string]string) bool {
	if hash != "" && kb.hashes[hash] {
		return true
	}
	for _, im := range kb.images {
		if maps.Equal(im, images) {
			return true
		}
	}
	return false
}

// Surge is the maxSurge a revert writes for its rollout and the
// Deployment's own, which it puts back after: both are fixed at preflight,
// so a resume restores the value the Deployment had, not the config's.
type Surge struct {
	// From is the Deployment's maxSurge before the run (nil: unset).
	From *intstr.IntOrString `json:"from,omitempty"`
	To   intstr.IntOrString  `json:"to"`
}

func (j *Journal) step(name string) *StepRecord {
	for i := range j.Steps {
		if j.Steps[i].Name == name {
			return &j.Steps[i]
		}
	}
	return nil
}

// journalStore reads and writes journals; every write carries the
// resourceVersion last seen, so two writers cannot both believe they own
// the run.
type journalStore struct {
	cms     corev1client.ConfigMapsGetter
	timeout time.Duration
}

// load returns the journal and its ConfigMap, or nil, nil when there is none.
func (s *journalStore) load(ctx context.Context, ns string, uid types.UID) (*Journal, *corev1.ConfigMap, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	name := JournalName(uid)
	cm, err := s.cms.ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get journal configmap %s/%s: %w", ns, name, err)
	}
	var j Journal
	if err := json.Unmarshal([]byte(cm.Data[journalKey]), &j); err != nil {
		return nil, cm, fmt.Errorf("decode journal configmap %s/%s: %w", ns, name, err)
	}
	return &j, cm, nil
}

// save creates the journal (prev nil) or updates prev with its
// resourceVersion as precondition; it returns the new ConfigMap.
func (s *journalStore) save(ctx context.Context, j *Journal, prev *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	data, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode journal of deployment %s/%s: %w", j.Namespace, j.Deployment, err)
	}
	name := JournalName(j.UID)
	var cm *corev1.ConfigMap
	if prev == nil {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: j.Namespace,
			Labels: map[string]string{
				LabelJournal:    "true",
				LabelDeployment: j.Deployment,
				labelManagedBy:  "rollguard",
			},
		}}
	} else {
		cm = prev.DeepCopy()
	}
	cm.Data = map[string]string{journalKey: string(data)}
	var out *corev1.ConfigMap
	if prev == nil {
		out, err = s.cms.ConfigMaps(j.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	} else {
		out, err = s.cms.ConfigMaps(j.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	}
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return nil, fmt.Errorf("write journal configmap %s/%s: %w", j.Namespace, name, ErrJournalConflict)
	case err != nil:
		return nil, fmt.Errorf("write journal configmap %s/%s: %w", j.Namespace, name, err)
	}
	return out, nil
}
