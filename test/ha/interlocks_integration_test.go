package ha

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/rollback"
)

// rolledBack deploys the bad image on name and waits for rollguard to
// roll it back completely; it returns the finished journal.
func (h *harness) rolledBack(name string) *rollback.Journal {
	h.t.Helper()
	h.deploy(name, badImage, "")
	j := h.waitJournal(name, 90*time.Second, rollback.RunSucceeded)
	if d := h.waitRollout(name, 30*time.Second); image(d) != goodImage {
		h.t.Fatalf("%s after the first rollback, want %s", image(d), goodImage)
	}
	return j
}

// waitTriggerOK waits until the daemon sees the target healthy again, so
// the next breach starts a fresh run.
func waitTriggerOK(h *harness, d *daemon, target string) {
	h.t.Helper()
	eventually(h.t, target+" error-rate ok", 60*time.Second, func() (bool, string) {
		st, err := triggerStatus(d.status(), target, "error-rate")
		return err == nil && st.State == "ok", fmt.Sprintf("%+v %v", st, err)
	})
}

// TestInterlocksBlockWithoutWrites fires a rollback trigger into each
// interlock: each must block with no write to the Deployment or its
// journal and exactly one "cannot roll back" page naming the reason; a
// dry-run writes nothing and sends one info "would roll back" event.
func TestInterlocksBlockWithoutWrites(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  daemonConfig
		// prepare runs once the daemon is up and returns the blocked
		// Deployment as the test last wrote it: the write watch starts
		// there, before the trigger can fire.
		prepare func(h *harness, d *daemon) *appsv1.Deployment
		// want are substrings of the one cannot_rollback page; nil for
		// dry-run.
		want []string
		// prior is how many rollbacks prepare itself causes.
		prior int
	}{
		{
			name: "cooldown",
			cfg:  daemonConfig{interlocks: map[string]any{"cooldown": "10m"}, targets: []target{{name: deployName, deployment: deployName}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				h.rolledBack(deployName)
				waitTriggerOK(h, d, deployName)
				// A different bad revision (same image, another template),
				// so one-per-revision does not apply: only the cooldown.
				return h.deploy(deployName, badImage, "second")
			},
			want:  []string{"cannot roll back", "cooldown"},
			prior: 1,
		},
		{
			name: "budget",
			cfg: daemonConfig{interlocks: map[string]any{"maxRollbacksPerHour": 1},
				targets: []target{{name: "api-a", deployment: "api-a"}, {name: "api-b", deployment: "api-b"}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				h.rolledBack("api-a")
				return h.deploy("api-b", badImage, "")
			},
			want:  []string{"cannot roll back", "budget-exhausted", "budget 1"},
			prior: 1,
		},
		{
			name: "freeze-annotation",
			cfg:  daemonConfig{targets: []target{{name: deployName, deployment: deployName}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				h.annotate(deployName, "rollguard.io/freeze", "maintenance")
				return h.deploy(deployName, badImage, "")
			},
			want: []string{"cannot roll back", "frozen", "maintenance"},
		},
		{
			name: "freeze-config",
			cfg:  daemonConfig{targets: []target{{name: deployName, deployment: deployName, freeze: true}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				return h.deploy(deployName, badImage, "")
			},
			want: []string{"cannot roll back", "frozen"},
		},
		{
			name: "one-per-revision",
			cfg:  daemonConfig{targets: []target{{name: deployName, deployment: deployName}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				j := h.rolledBack(deployName)
				waitTriggerOK(h, d, deployName)
				again := h.deploy(deployName, badImage, "")
				// The redeploy must be the very revision rolled back.
				h.waitRollout(deployName, 30*time.Second)
				for _, rs := range h.replicaSets(deployName) {
					if rs.Spec.Template.Spec.Containers[0].Image == badImage && rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != j.Bad.Hash {
						h.t.Fatalf("redeployed template hash %s, rolled back %s", rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey], j.Bad.Hash)
					}
				}
				return again
			},
			want:  []string{"cannot roll back", "already-rolled-back"},
			prior: 1,
		},
		{
			name: "revision-age",
			// The trigger's 5 s window is longer than the revision may be
			// old: by the time it fires, the deploy is too old to act on.
			cfg: daemonConfig{interlocks: map[string]any{"maxRevisionAge": "1s"}, targets: []target{{name: deployName, deployment: deployName}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				return h.deploy(deployName, badImage, "")
			},
			want: []string{"cannot roll back", "revision-too-old"},
		},
		{
			name: "dry-run",
			cfg:  daemonConfig{dryRun: true, targets: []target{{name: deployName, deployment: deployName}}},
			prepare: func(h *harness, d *daemon) *appsv1.Deployment {
				return h.deploy(deployName, badImage, "")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tt.name)
			for _, tg := range tt.cfg.targets {
				h.createDeployment(tg.deployment, goodImage)
			}
			d := h.startDaemon(h.writeConfig(t.TempDir(), tt.cfg), "rollguard-"+tt.name)
			blocked := tt.prepare(h, d)
			w := h.watchWrites(blocked)

			kind := "cannot_rollback"
			if tt.want == nil {
				kind = "would_rollback"
			}
			eventually(t, kind+" page", 60*time.Second, func() (bool, string) {
				return len(h.events(kind)) > 0, fmt.Sprint(h.summaries(h.events("")))
			})
			// Several more ticks: a trigger that stays firing must not
			// page again, and nothing may be written late.
			time.Sleep(5 * time.Second)
			w.assertNone()

			all := h.events("")
			got := h.events(kind)
			if len(got) != 1 {
				t.Fatalf("%d %s events, want 1: %q", len(got), kind, h.summaries(all))
			}
			e := got[0]
			if tt.want == nil {
				if e.Payload.Severity != "info" || !strings.Contains(e.Payload.Summary, "would roll back") {
					t.Errorf("dry-run event %s %q, want info 'would roll back'", e.Payload.Severity, e.Payload.Summary)
				}
				if n := len(h.events("cannot_rollback")); n != 0 {
					t.Errorf("%d cannot_rollback pages in dry-run, want 0", n)
				}
			} else {
				for _, s := range tt.want {
					if !strings.Contains(e.Payload.Summary, s) {
						t.Errorf("page %q does not say %q", e.Payload.Summary, s)
					}
				}
			}
			if n := h.startedChanges(); n != tt.prior {
				t.Errorf("%d rollbacks started, want %d: %q", n, tt.prior, h.changeEvents())
			}
			var kinds []string
			for _, e := range all {
				if k := e.Kind(h.t); k != "step_started" && k != "step_finished" {
					kinds = append(kinds, k+"("+e.Payload.Severity+")")
				}
			}
			t.Logf("pages: %v; the blocking one: %q", kinds, e.Payload.Summary)
		})
	}
}
