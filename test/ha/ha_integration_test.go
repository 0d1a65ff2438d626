package ha

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/rollguard/rollguard/pkg/rollback"
)

const (
	deployName = "pggit-api"
	leaseDur   = 2 * time.Second
)

// pair is two rollguard processes on one config with leader election.
type pair struct {
	h                *harness
	leader, follower *daemon
}

// startPair creates the simulated Deployment at the good image and runs two
// rollguards on the same config; it returns once exactly one leads.
func startPair(t *testing.T, name, rampPause string) *pair {
	h := newHarness(t, name)
	h.createDeployment(deployName, goodImage)
	return h.startPair(daemonConfig{targets: []target{{name: deployName, deployment: deployName, rampPause: rampPause}}})
}

// startPair runs two rollguards with leader election on c; it returns
// once exactly one leads.
func (h *harness) startPair(c daemonConfig) *pair {
	t := h.t
	c.leaderElection = true
	cfg := h.writeConfig(t.TempDir(), c)
	a := h.startDaemon(cfg, "rollguard-a")
	b := h.startDaemon(cfg, "rollguard-b")
	p := &pair{h: h}
	eventually(t, "exactly one leader", 20*time.Second, func() (bool, string) {
		sa, sb := a.status(), b.status()
		switch {
		case sa.Leader && !sb.Leader:
			p.leader, p.follower = a, b
		case sb.Leader && !sa.Leader:
			p.leader, p.follower = b, a
		default:
			return false, fmt.Sprintf("a leader=%v, b leader=%v", sa.Leader, sb.Leader)
		}
		return true, ""
	})
	ctx, cancel := h.ctx()
	defer cancel()
	lease, err := h.client.CoordinationV1().Leases(h.ns).Get(ctx, "rollguard", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := derefS(lease.Spec.HolderIdentity); got != p.leader.identity {
		t.Fatalf("lease holder %q, but %s says it leads", got, p.leader.identity)
	}
	t.Logf("%s leads, %s follows", p.leader.identity, p.follower.identity)
	return p
}

func derefS(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// recorder follows a Deployment's template images and a namespace's
// journal runs from a resourceVersion on.
type recorder struct {
	f *following

	mu     sync.Mutex
	images []string // distinct consecutive template images
	runs   []string // distinct journal run IDs, in order
}

func (h *harness) record(from *appsv1.Deployment) *recorder {
	h.t.Helper()
	r := &recorder{images: []string{image(from)}}
	onDeployment := func(ev watch.Event) {
		if d, ok := ev.Object.(*appsv1.Deployment); ok {
			r.mu.Lock()
			if img := image(d); r.images[len(r.images)-1] != img {
				r.images = append(r.images, img)
			}
			r.mu.Unlock()
		}
	}
	onJournal := func(ev watch.Event) {
		if cm, ok := ev.Object.(*corev1.ConfigMap); ok {
			var j rollback.Journal
			if json.Unmarshal([]byte(cm.Data["journal.json"]), &j) == nil {
				r.mu.Lock()
				if !slices.Contains(r.runs, j.RunID) {
					r.runs = append(r.runs, j.RunID)
				}
				r.mu.Unlock()
			}
		}
	}
	r.f = h.follow(from, metav1.ListOptions{LabelSelector: rollback.LabelJournal + "=true"}, onDeployment, onJournal, nil)
	return r
}

func (r *recorder) stop() (images, runs []string) {
	r.f.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.images), slices.Clone(r.runs)
}

// TestTwoReplicasOneActs runs two rollguards with leader election on one
// config and deploys a bad version: both evaluate, exactly one acts (one
// journal run, one RollbackStarted chain, one rollback in the history).
func TestTwoReplicasOneActs(t *testing.T) {
	t.Parallel()
	p := startPair(t, "two", "1s")
	h := p.h
	bad := h.deploy(deployName, badImage, "")
	rec := h.record(bad)

	j := h.waitJournal(deployName, 90*time.Second, rollback.RunSucceeded)
	final := h.waitRollout(deployName, 30*time.Second)
	// Give the follower several ticks to act wrongly if it were going to.
	time.Sleep(5 * time.Second)
	images, runs := rec.stop()

	if image(final) != goodImage || ptrVal(final.Spec.Replicas) != replicas || j.Replicas != replicas {
		t.Errorf("final %s replicas %d (journal recorded %d), want %s with %d", image(final), ptrVal(final.Spec.Replicas), j.Replicas, goodImage, replicas)
	}
	if want := []string{badImage, goodImage}; !slices.Equal(images, want) {
		t.Errorf("template images over time %v, want %v", images, want)
	}
	if len(runs) != 1 || runs[0] != j.RunID {
		t.Errorf("journal runs %v, want exactly [%s]", runs, j.RunID)
	}
	h.checkOneRollback(deployName)
	if n := h.kubeEvents(deployName, "RollbackStarted"); n != 1 {
		t.Errorf("%d RollbackStarted Kubernetes events, want 1", n)
	}
	if n := len(p.leader.logLines("rollback plan started")); n != 1 {
		t.Errorf("leader %s started %d plans, want 1", p.leader.identity, n)
	}
	if n := len(p.follower.logLines("rollback plan started")); n != 0 {
		t.Errorf("follower %s started %d plans, want 0", p.follower.identity, n)
	}

	eventually(t, "rollback_succeeded page", 15*time.Second, func() (bool, string) {
		return len(h.events("rollback_succeeded")) > 0, fmt.Sprint(h.summaries(h.events("")))
	})
	all := h.events("")
	// A plan that starts is a change event (below), not a page.
	for kind, want := range map[string]int{"detected": 1, "rollback_started": 0, "rollback_succeeded": 1, "cannot_rollback": 0} {
		if got := len(h.events(kind)); got != want {
			t.Errorf("%d PagerDuty %s events, want %d; all: %q", got, kind, want, h.summaries(all))
		}
	}
	started := 0
	for _, s := range h.changeEvents() {
		if strings.Contains(s, " started") {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d 'rollback started' change events, want 1: %q", started, h.changeEvents())
	}
}

// TestLeaderKilledMidPlan SIGKILLs the leader in the ramp of a long plan:
// the follower takes over within about the lease duration, resumes the
// journaled run (not a second plan) and finishes it; the bad version never
// comes back and the recorded replica count is restored.
func TestLeaderKilledMidPlan(t *testing.T) {
	t.Parallel()
	p := startPair(t, "kill", "8s")
	h := p.h
	bad := h.deploy(deployName, badImage, "")
	rec := h.record(bad)

	var runID string
	eventually(t, "ramp step running at 2 replicas", 90*time.Second, func() (bool, string) {
		j, _ := h.journal(deployName)
		if j == nil {
			return false, "no journal"
		}
		runID = j.RunID
		d := h.get(deployName)
		for _, s := range j.Steps {
			if s.Name == rollback.StepRamp {
				return s.State == rollback.StepRunning && ptrVal(d.Spec.Replicas) == 2 && d.Status.AvailableReplicas == 2,
					fmt.Sprintf("steps %s, replicas %d", stepStates(j), ptrVal(d.Spec.Replicas))
			}
		}
		return false, "no ramp step in " + stepStates(j)
	})
	killed := time.Now()
	if err := p.leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.leader.exited
	t.Logf("killed leader %s in the ramp of run %s", p.leader.identity, runID)

	var takeover time.Duration
	eventually(t, "follower takes the lease", 15*time.Second, func() (bool, string) {
		s, err := p.follower.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		takeover = time.Since(killed)
		return s.Leader, "still follower"
	})
	// The lease expires leaseDuration after the last renewal and the next
	// retry takes it: how long that takes is measured, not asserted (a
	// busy machine stretches it); the bound is the 15 s above.
	t.Logf("%s leads %s after the kill (lease %s)", p.follower.identity, takeover.Round(10*time.Millisecond), leaseDur)

	j := h.waitJournal(deployName, 60*time.Second, rollback.RunSucceeded)
	final := h.waitRollout(deployName, 30*time.Second)
	time.Sleep(3 * time.Second)
	images, runs := rec.stop()

	if j.RunID != runID {
		t.Errorf("journal run %s after the takeover, want the resumed %s", j.RunID, runID)
	}
	if len(runs) != 1 {
		t.Errorf("journal runs %v, want exactly one", runs)
	}
	for _, s := range j.Steps {
		if s.State != rollback.StepDone {
			t.Errorf("step %s ended %s", s.Name, s.State)
		}
		if s.Name == rollback.StepRamp && s.Attempts != 2 {
			t.Errorf("ramp ran %d times, want 2 (interrupted, then resumed)", s.Attempts)
		}
		if s.Name != rollback.StepRamp && s.Name != rollback.StepVerify && s.Attempts > 1 {
			t.Errorf("step %s ran %d times, want once", s.Name, s.Attempts)
		}
	}
	if image(final) != goodImage || ptrVal(final.Spec.Replicas) != j.Replicas || j.Replicas != replicas {
		t.Errorf("final %s replicas %d (journal recorded %d), want %s with %d", image(final), ptrVal(final.Spec.Replicas), j.Replicas, goodImage, replicas)
	}
	if want := []string{badImage, goodImage}; !slices.Equal(images, want) {
		t.Errorf("template images over time %v, want %v: the bad version came back", images, want)
	}
	h.checkOneRollback(deployName)
	if n := len(p.follower.logLines("resuming an in-flight plan")); n != 1 {
		t.Errorf("the new leader resumed %d times, want 1", n)
	}
	for _, l := range p.follower.logLines("rollback plan started") {
		if l["run"] != runID || l["resumed"] != true {
			t.Errorf("the new leader started a plan that is not the resumed run %s: %v", runID, l)
		}
	}

	eventually(t, "rollback_succeeded page", 15*time.Second, func() (bool, string) {
		return len(h.events("rollback_succeeded")) == 1, fmt.Sprint(h.summaries(h.events("")))
	})
	var initiated, resumed int
	for _, e := range h.events("rollback_started") {
		var id string
		if e.Detail(t, "run_id", &id); id != runID {
			t.Errorf("rollback_started of run %q, want %s", id, runID)
		}
		switch {
		case strings.HasPrefix(e.Payload.Summary, "ROLLBACK INITIATED"):
			initiated++
		case strings.HasPrefix(e.Payload.Summary, "ROLLBACK RESUMED"):
			resumed++
		}
	}
	// The start was a change event only; the resumed run pages, since the
	// rollguard that takes it up may never have paged the incident.
	if initiated != 0 || resumed != 1 || h.startedChanges() != 2 {
		t.Errorf("%d initiated and %d resumed pages, %d started change events, want 0, 1 and 2: %q %q",
			initiated, resumed, h.startedChanges(), h.summaries(h.events("")), h.changeEvents())
	}
}

// TestFailoverKeepsCooldown rolls a bad deploy back, stops the leader
// (SIGTERM) so the follower takes over, and deploys another bad revision
// within the cooldown: the new leader must honour the cooldown the old one
// started (the guard's history comes from the journal, docs/design.md §5), paging
// once and writing nothing.
func TestFailoverKeepsCooldown(t *testing.T) {
	t.Parallel()
	p := startPair(t, "failover", "1s")
	h := p.h
	h.rolledBack(deployName)
	p.leader.stop(syscall.SIGTERM, 10*time.Second)
	eventually(t, "follower takes the lease", 15*time.Second, func() (bool, string) {
		return p.follower.status().Leader, "still follower"
	})
	waitTriggerOK(h, p.follower, deployName)

	second := h.deploy(deployName, badImage, "second")
	w := h.watchWrites(second)
	eventually(t, "cannot_rollback page or a second rollback", 60*time.Second, func() (bool, string) {
		return len(h.events("cannot_rollback")) > 0 || len(p.follower.logLines("rollback plan started")) > 0, fmt.Sprint(h.summaries(h.events("")))
	})
	time.Sleep(3 * time.Second)
	w.assertNone()
	got := h.events("cannot_rollback")
	if len(got) != 1 || !strings.Contains(got[0].Payload.Summary, "cooldown") {
		t.Errorf("cannot_rollback pages %q, want one naming the cooldown", h.summaries(got))
	}
}
