package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// apiToken is the fake daemon's bearer token.
const apiToken = "tok-7f3e9a1c55d0"

// fakeController is the daemon behind the API, recording what it was asked.
type fakeController struct {
	status api.Status

	mu        sync.Mutex
	rollbacks []api.ActionRequest
	freezes   []freezeCall
}

type freezeCall struct {
	target string
	frozen bool
	reason string
}

func (f *fakeController) Status() api.Status    { return f.status }
func (f *fakeController) Ready() (bool, string) { return true, "" }

func (f *fakeController) Rollback(_ context.Context, req api.ActionRequest) (api.ActionResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rollbacks = append(f.rollbacks, req)
	switch req.Target {
	case "pggit-api":
		return api.ActionResult{Target: req.Target, Action: req.Action, Accepted: true, Detail: "rollback started (run 20261125T220000Z)"}, nil
	case "frozen-api":
		return api.ActionResult{}, fmt.Errorf("%w: target is frozen", api.ErrRefused)
	}
	return api.ActionResult{}, fmt.Errorf("%w: %q", api.ErrUnknownTarget, req.Target)
}

func (f *fakeController) SetFreeze(_ context.Context, target string, frozen bool, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.freezes = append(f.freezes, freezeCall{target, frozen, reason})
	if target != "pggit-api" {
		return fmt.Errorf("%w: %q", api.ErrUnknownTarget, target)
	}
	return nil
}

func (f *fakeController) Alerts(context.Context, *alertmanager.Notification) ([]api.ActionResult, error) {
	return nil, nil
}
func (f *fakeController) Reload(context.Context) error { return nil }
func (f *fakeController) AlertOptions() alertmanager.Options {
	return alertmanager.Options{}
}

func (f *fakeController) calls() ([]api.ActionRequest, []freezeCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.ActionRequest(nil), f.rollbacks...), append([]freezeCall(nil), f.freezes...)
}

// fakeDaemon serves the real API handler over a fake controller.
func fakeDaemon(t *testing.T, st api.Status) (*fakeController, string) {
	t.Helper()
	c := &fakeController{status: st}
	srv := httptest.NewServer(api.NewHandler(c, api.Options{Token: []byte(apiToken)}, zap.NewNop()))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func TestStatusTable(t *testing.T) {
	loaded := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	st := api.Status{
		Version: "v0.9.0", Leader: true, ConfigHash: "a1b2c3d4e5f6", LoadedAt: loaded,
		Triggers: []trigger.Status{
			{Target: "pggit-api", Trigger: "error-rate", State: window.StateFiring, Op: trigger.Above, Threshold: 0.05, Value: 0.2,
				BreachStart: time.Date(2026, 11, 25, 21, 30, 5, 0, time.UTC)},
			{Target: "pggit-api", Trigger: "latency-p99", State: window.StateNoData, Op: trigger.Above, Threshold: 5, Value: math.NaN(),
				LastError: "timeout"},
		},
		Targets: []api.TargetStatus{{Name: "pggit-api", Namespace: "production", Deployment: "pggit-api", Frozen: true, LastResult: "quick succeeded"}},
	}
	_, url := fakeDaemon(t, st)

	r := rollguard(t, "status", "--api", url)
	if r.code != exitOK {
		t.Fatalf("exit code = %d, want 0\n%s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	wantFirst := "rollguard v0.9.0  leader=true  dryRun=false  config=a1b2c3d4e5f6 loaded 2026-11-25T21:00:00Z"
	if lines[0] != wantFirst {
		t.Errorf("first line = %q, want %q", lines[0], wantFirst)
	}
	// Compare the table by fields: tabwriter's padding is not the point.
	var got [][]string
	for _, l := range lines[1:] {
		if l != "" {
			got = append(got, strings.Fields(l))
		}
	}
	want := [][]string{
		{"TARGET", "TRIGGER", "STATE", "VALUE", "THRESHOLD", "BREACH", "SINCE", "ERROR"},
		{"pggit-api", "error-rate", "firing", "0.2", "above", "0.05", "21:30:05"},
		{"pggit-api", "latency-p99", "nodata", "-", "above", "5", "-", "timeout"},
		{"TARGET", "DEPLOYMENT", "DRY-RUN", "FROZEN", "RUNNING", "LAST", "RESULT"},
		{"pggit-api", "production/pggit-api", "false", "true", "-", "quick", "succeeded"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status table:\n%s\nfields %q\nwant %q", r.stdout, got, want)
	}

	t.Run("json", func(t *testing.T) {
		r := rollguard(t, "status", "--api", url, "--json")
		if r.code != exitOK {
			t.Fatalf("exit code = %d, want 0\n%s", r.code, r.stderr)
		}
		var back api.Status
		if err := json.Unmarshal([]byte(r.stdout), &back); err != nil {
			t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
		}
		if len(back.Triggers) != 2 || back.Triggers[0].State != window.StateFiring || !math.IsNaN(back.Triggers[1].Value) {
			t.Errorf("status --json round trip = %+v", back.Triggers)
		}
	})
}

func TestRollbackAndFreezeThroughAPI(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "token", apiToken+"\n")
	wrong := writeFile(t, dir, "wrong-token", "not-"+apiToken+"\n")
	empty := writeFile(t, dir, "empty-token", "  \n")

	tests := []struct {
		name         string
		args         []string // --api and --token-file are added
		token        string
		wantCode     int
		wantStdout   string
		wantStderr   string
		wantRollback *api.ActionRequest
		wantFreeze   *freezeCall
	}{
		{name: "rollback", args: []string{"rollback", "--target", "pggit-api", "--action", "rollback", "--reason", "20% 5xx after v1.1.0"}, token: good,
			wantStdout:   "pggit-api rollback: rollback started (run 20261125T220000Z)\n",
			wantRollback: &api.ActionRequest{Target: "pggit-api", Action: "rollback", Reason: "20% 5xx after v1.1.0"}},
		{name: "rollback refused by an interlock", args: []string{"rollback", "--target", "frozen-api", "--reason", "x"}, token: good, wantCode: exitFail,
			wantStderr:   "rollguard: api POST /api/v1/targets/frozen-api/rollback: 409 Conflict: refused: target is frozen\n",
			wantRollback: &api.ActionRequest{Target: "frozen-api", Reason: "x"}},
		{name: "rollback with a wrong token", args: []string{"rollback", "--target", "pggit-api", "--reason", "x"}, token: wrong, wantCode: exitFail,
			wantStderr: "rollguard: api POST /api/v1/targets/pggit-api/rollback: 403 Forbidden: wrong bearer token\n"},
		{name: "rollback with an empty token file", args: []string{"rollback", "--target", "pggit-api", "--reason", "x"}, token: empty, wantCode: exitUsage,
			wantStderr: "rollguard: token file " + empty + " is empty\n"},
		{name: "freeze", args: []string{"freeze", "--target", "pggit-api", "--reason", "release freeze"}, token: good,
			wantStdout: "pggit-api: frozen\n", wantFreeze: &freezeCall{"pggit-api", true, "release freeze"}},
		{name: "unfreeze", args: []string{"unfreeze", "--target", "pggit-api", "--reason", "release done"}, token: good,
			wantStdout: "pggit-api: unfrozen\n", wantFreeze: &freezeCall{"pggit-api", false, "release done"}},
		{name: "freeze an unknown target", args: []string{"freeze", "--target", "nope", "--reason", "x"}, token: good, wantCode: exitUsage, // an unknown target is bad input
			wantStderr: "rollguard: api POST /api/v1/targets/nope/freeze: 404 Not Found: unknown target: \"nope\"\n",
			wantFreeze: &freezeCall{"nope", true, "x"}},
		{name: "freeze with a wrong token", args: []string{"freeze", "--target", "pggit-api", "--reason", "x"}, token: wrong, wantCode: exitFail,
			wantStderr: "rollguard: api POST /api/v1/targets/pggit-api/freeze: 403 Forbidden: wrong bearer token\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, url := fakeDaemon(t, api.Status{})
			r := rollguard(t, append(tt.args, "--api", url, "--token-file", tt.token)...)
			if r.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d\n%s", r.code, tt.wantCode, r.stderr)
			}
			if r.stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.wantStdout)
			}
			if r.stderr != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", r.stderr, tt.wantStderr)
			}
			if strings.Contains(r.stdout+r.stderr, apiToken) {
				t.Errorf("the output holds the token")
			}
			rollbacks, freezes := c.calls()
			var wantRollbacks []api.ActionRequest
			if tt.wantRollback != nil {
				wantRollbacks = []api.ActionRequest{*tt.wantRollback}
			}
			if !reflect.DeepEqual(rollbacks, wantRollbacks) {
				t.Errorf("daemon got rollbacks %+v, want %+v", rollbacks, wantRollbacks)
			}
			var wantFreezes []freezeCall
			if tt.wantFreeze != nil {
				wantFreezes = []freezeCall{*tt.wantFreeze}
			}
			if !reflect.DeepEqual(freezes, wantFreezes) {
				t.Errorf("daemon got freezes %+v, want %+v", freezes, wantFreezes)
			}
		})
	}

	t.Run("token file from the environment", func(t *testing.T) {
		c, url := fakeDaemon(t, api.Status{})
		t.Setenv("ROLLGUARD_TOKEN_FILE", good)
		t.Setenv("ROLLGUARD_API", url)
		r := rollguard(t, "freeze", "--target", "pggit-api", "--reason", "env")
		if r.code != exitOK {
			t.Fatalf("exit code = %d, want 0\n%s", r.code, r.stderr)
		}
		if _, f := c.calls(); len(f) != 1 || f[0].reason != "env" {
			t.Errorf("daemon got freezes %+v, want one with reason env", f)
		}
	})
}
