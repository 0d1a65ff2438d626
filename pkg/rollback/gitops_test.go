package rollback_test

import (
	appsv1 "k8s.io/api/apps/v1"

	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// fakeOwners is a Flux Kustomization that reconciles the test Deployment.
type fakeOwners struct {
	mu        sync.Mutex
	owner     gitops.Owner
	calls     []string
	suspendOK bool
}

func newFakeOwners() *fakeOwners {
	return &fakeOwners{suspendOK: true, owner: gitops.Owner{
		Ref:    gitops.Ref{Tool: gitops.Flux, Kind: gitops.KindKustomization, Namespace: "flux-system", Name: "apps"},
		Source: "GitRepository flux-system/apps", Revision: "main@sha1:abc123",
	}}
}

func (f *fakeOwners) Detect(context.Context, map[string]string, map[string]string, string) (*gitops.Owner, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "detect")
	o := f.owner
	return &o, nil
}

func (f *fakeOwners) Get(context.Context, gitops.Ref) (*gitops.Owner, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "get")
	o := f.owner
	return &o, nil
}

func (f *fakeOwners) Suspend(_ context.Context, _ gitops.Ref, m gitops.Mark) (*gitops.Owner, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "suspend")
	if !f.suspendOK {
		return nil, false, errors.New("forbidden")
	}
	m.State = gitops.StateSuspended
	f.owner.Suspended, f.owner.Mark = true, &m
	o := f.owner
	return &o, true, nil
}

func (f *fakeOwners) Lift(context.Context, gitops.Ref, *gitops.Mark) (*gitops.Owner, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "lift")
	f.owner.Suspended, f.owner.Mark = false, nil
	o := f.owner
	return &o, nil
}

func TestGitOpsPolicy(t *testing.T) {
	ctx := context.Background()
	t.Run("refuse writes nothing and names the commit", func(t *testing.T) {
		c := newCluster(t)
		tg := target()
		tg.GitOps = rollback.GitOpsPolicy{Owners: newFakeOwners(), Target: "api"}
		c.ClearActions()
		_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
		var ref *rollback.RefusedError
		if !errors.As(err, &ref) || !errors.Is(err, rollback.ErrGitOpsManaged) {
			t.Fatalf("err = %v, want a refusal for ErrGitOpsManaged", err)
		}
		for _, want := range []string{"Flux Kustomization flux-system/apps", "revert commit abc123", "api=" + bad} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q lacks %q", err, want)
			}
		}
		if w := c.Writes(); len(w) != 0 {
			t.Errorf("refusal wrote %v", w)
		}
	})
	t.Run("suspend comes before the first write and is checked last", func(t *testing.T) {
		c := newCluster(t)
		owners := newFakeOwners()
		tg := target()
		tg.GitOps = rollback.GitOpsPolicy{Mode: gitops.ModeSuspend, Owners: owners, Target: "api"}
		res, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"preflight=done", "gitops-suspend=done", "stop=done", "application=done", "wait-rollout=done", "ramp=done", "verify=done", "gitops-check=done"}
		if got := stepNames(journal(t, c)); !reflect.DeepEqual(got, want) {
			t.Errorf("steps %v, want %v", got, want)
		}
		if res.Steps[1].Detail == "" || !strings.Contains(res.Steps[1].Detail, "suspended Flux Kustomization flux-system/apps") {
			t.Errorf("suspend detail %q", res.Steps[1].Detail)
		}
		j := journal(t, c)
		if j.GitOps == nil || !j.GitOps.Wrote || j.GitOps.Owner.Mark == nil || j.GitOps.Owner.Mark.Bad != "api="+bad {
			t.Errorf("journaled gitops %+v", j.GitOps)
		}
		// The controller puts the bad revision back: the next firing is
		// refused and paged, never a second rollback.
		c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template = j.Bad.Template })
		c.Complete(ns, name)
		c.ClearActions()
		_, err = newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
		if !errors.Is(err, rollback.ErrGitOpsReverted) {
			t.Fatalf("after the controller reverted: err = %v, want ErrGitOpsReverted", err)
		}
	})
	t.Run("a run closed before any write lifts the suspension again", func(t *testing.T) {
		c := newCluster(t)
		owners := newFakeOwners()
		tg := target()
		tg.GitOps = rollback.GitOpsPolicy{Mode: gitops.ModeSuspend, Owners: owners, Target: "api"}
		// Shutdown right after the suspension: a hand-over, the suspension
		// is kept for the next leader's resume.
		ctx, cancel := context.WithCancel(ctx)
		obs := &cancelAfter{step: rollback.StepGitOpsSuspend, cancel: cancel}
		_, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg})
		if !errors.Is(err, rollback.ErrHandedOver) {
			t.Fatalf("err = %v, want a hand-over", err)
		}
		if got := owners.calls; !reflect.DeepEqual(got, []string{"detect", "suspend"}) {
			t.Errorf("owner calls %v, want detect, suspend (kept for the resume)", got)
		}
		// Nobody resumes it in time: the run is closed for a human, and
		// the suspension it held with nothing written is lifted.
		late := fixedNow().Add(rollback.DefaultMaxResumeAge + time.Minute)
		if _, err := executorAt(c, nil, late).Run(context.Background(), rollback.Request{Target: tg}); !errors.Is(err, rollback.ErrNeedsHuman) {
			t.Fatalf("late run: %v, want ErrNeedsHuman", err)
		}
		if got := owners.calls; !reflect.DeepEqual(got, []string{"detect", "suspend", "lift"}) {
			t.Errorf("owner calls %v, want detect, suspend, lift", got)
		}
		j := journal(t, c)
		if j.GitOps == nil || !j.GitOps.Lifted || j.Steps[1].State != rollback.StepPending {
			t.Errorf("journal gitops %+v, suspend step %+v", j.GitOps, j.Steps[1])
		}
	})
}

// cancelAfter cancels the run's context when step finishes.
type cancelAfter struct {
	step   string
	cancel context.CancelFunc
}

func (c *cancelAfter) PlanStarted(rollback.Facts) {}
func (c *cancelAfter) StepStarted(rollback.Facts) {}
func (c *cancelAfter) StepFinished(f rollback.Facts) {
	if f.Step == c.step {
		c.cancel()
	}
}
func (c *cancelAfter) PlanFinished(rollback.Facts) {}
