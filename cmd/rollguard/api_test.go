package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/api/apitest"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// apiToken is the fake daemon's bearer token.
const apiToken = "tok-7f3e9a1c55d0"

// fakeDaemon serves the real API handler over a fake controller that knows
// pggit-api (a rollback starts) and frozen-api (a rollback is refused).
func fakeDaemon(t *testing.T, st api.Status) (*apitest.Controller, string) {
	t.Helper()
	c := &apitest.Controller{
		State:   st,
		IsReady: true,
		Targets: map[string]apitest.Answer{
			"pggit-api":  {Detail: "rollback started (run 20261125T220000Z)"},
			"frozen-api": {Err: fmt.Errorf("%w: target is frozen", api.ErrRefused)},
		},
	}
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
		wantFreeze   *apitest.Freeze
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
			wantStdout: "pggit-api: frozen\n", wantFreeze: &apitest.Freeze{Target: "pggit-api", Frozen: true, Reason: "release freeze"}},
		{name: "unfreeze", args: []string{"unfreeze", "--target", "pggit-api", "--reason", "release done"}, token: good,
			wantStdout: "pggit-api: unfrozen\n", wantFreeze: &apitest.Freeze{Target: "pggit-api", Frozen: false, Reason: "release done"}},
		{name: "freeze an unknown target", args: []string{"freeze", "--target", "nope", "--reason", "x"}, token: good, wantCode: exitUsage, // an unknown target is bad input
			wantStderr: "rollguard: api POST /api/v1/targets/nope/freeze: 404 Not Found: unknown target: \"nope\"\n",
			wantFreeze: &apitest.Freeze{Target: "nope", Frozen: true, Reason: "x"}},
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
			rollbacks, freezes := c.Rollbacks(), c.Freezes()
			var wantRollbacks []api.ActionRequest
			if tt.wantRollback != nil {
				wantRollbacks = []api.ActionRequest{*tt.wantRollback}
			}
			if !reflect.DeepEqual(rollbacks, wantRollbacks) {
				t.Errorf("daemon got rollbacks %+v, want %+v", rollbacks, wantRollbacks)
			}
			var wantFreezes []apitest.Freeze
			if tt.wantFreeze != nil {
				wantFreezes = []apitest.Freeze{*tt.wantFreeze}
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
		if f := c.Freezes(); len(f) != 1 || f[0].Reason != "env" {
			t.Errorf("daemon got freezes %+v, want one with reason env", f)
		}
	})
}
