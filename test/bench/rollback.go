package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollguard/rollguard/test/jsonlog"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// Methods compared by the rollback benchmark.
const (
	methodScript = "script"
	methodQuick  = "quick"
	methodRevert = "revert"
	// methodRevertPaced is revert with revertMaxSurge "": the Deployment's
	// own maxSurge/maxUnavailable (25 % / 25 %: one pod per round) pace it.
	methodRevertPaced = "revert-paced"
)

var methods = []string{methodScript, methodQuick, methodRevert, methodRevertPaced}

// rollbackRun is one timed rollback; every duration has the configured
// pauses taken out (the ramp pause; for rollguard also the verify step,
// which waits for post-rollout data and holds its window).
type rollbackRun struct {
	method string
	round  int
	// wall: the command from exec to exit (kubectl's or rollguard's
	// process start, config and client setup included).
	wall time.Duration
	// plan: rollguard's "rollback plan started" to "finished" (0 for the
	// script).
	plan time.Duration
	// ready: exec to 4 available replicas of the good image, as seen by
	// polling the API every 100 ms (the script returns before that).
	ready time.Duration
}

type rollbackResult struct {
	pause time.Duration
	// settle: idle time between the bad version's rollout and the timed
	// rollback.
	settle time.Duration
	runs   []rollbackRun
}

func runRollback(ctx context.Context, c *cluster, env sandboxenv.Env, o options) (*rollbackResult, error) {
	if err := c.ensureNamespace(ctx); err != nil {
		return nil, err
	}
	script, err := filepath.Abs("test/bench/quick-rollback.sh")
	if err != nil {
		return nil, err
	}
	res := &rollbackResult{pause: o.rampPause, settle: o.settle}
	say("== rollback duration: %d rounds of script, quick, revert and revert-paced (rotating order), ramp pause %s and verify's hold excluded", o.rounds, o.rampPause)
	for round := 1; round <= o.rounds; round++ {
		for k := range methods {
			m := methods[(k+round-1)%len(methods)]
			r, err := rollbackOnce(ctx, c, env, o, script, m, round)
			if err != nil {
				return nil, fmt.Errorf("round %d %s: %w", round, m, err)
			}
			res.runs = append(res.runs, r)
			say("   round %d %-6s wall %.2fs, plan %.2fs, 4 ready after %.2fs (pauses excluded)", round, m, r.wall.Seconds(), r.plan.Seconds(), r.ready.Seconds())
		}
	}
	return res, nil
}

func rollbackOnce(ctx context.Context, c *cluster, env sandboxenv.Env, o options, script, method string, round int) (rollbackRun, error) {
	r := rollbackRun{method: method, round: round}
	stamp := time.Now().Format("150405")
	name := fmt.Sprintf("rb-%s-%d-%s", method, round, stamp)
	badImage := "pggit-api:bench-bad-" + stamp
	defer c.remove(context.WithoutCancel(ctx), name)
	if err := c.prepare(ctx, name, badImage); err != nil {
		return r, err
	}
	// A real rollback starts a detection window (10 s at the least) after the
	// bad version rolled out. Starting at once measured the bench's own
	// setup instead: that rollout drains kube-controller-manager's
	// per-controller client rate limiter (20 QPS, burst 30), and every
	// Pod create of the rollback then queued 50 ms behind it.
	sleep(ctx, o.settle)
	dir := filepath.Join(o.outDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	pauses := time.Duration(0)
	var cmd *exec.Cmd
	logPath := filepath.Join(dir, "rollback.log")
	switch method {
	case methodScript:
		cmd = exec.CommandContext(ctx, script, benchNamespace, name, goodImage, fmt.Sprintf("%g", o.rampPause.Seconds()))
		cmd.Env = append(os.Environ(), "SANDBOX_BIN_DIR="+env["SANDBOX_BIN_DIR"], "KUBECONFIG="+env["KUBECONFIG"])
		pauses = o.rampPause
	default:
		port, err := localproc.FreePort()
		if err != nil {
			return r, err
		}
		surge := "100%"
		action := method
		if method == methodRevertPaced {
			surge, action = "", methodRevert
		}
		cfg, _, err := writeRollbackConfig(dir, env, name, port, o.rampPause, surge)
		if err != nil {
			return r, err
		}
		cmd = exec.CommandContext(ctx, o.rollguard, "rollback", "--local", "--config", cfg, "--target", name, "--action", action, "--reason", "make bench")
		if method == methodQuick {
			pauses = o.rampPause // ramp [2] then 4: one pause
		}
	}
	f, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f

	start, end, readyAt, err := c.runUntilReady(ctx, cmd, name, 120*time.Second)
	if err != nil {
		return r, fmt.Errorf("%s: %w (log %s)", method, err, logPath)
	}
	wall := end.Sub(start)
	if readyAt.IsZero() {
		return r, fmt.Errorf("%s: 4 replicas of %s not ready within 120s (log %s)", method, goodImage, logPath)
	}
	r.ready = readyAt.Sub(start) - pauses
	if method == methodScript {
		r.wall = wall - pauses
		return r, nil
	}
	var began, done, verifyFrom, verifyTo time.Time
	for _, l := range jsonlog.Read[logLine](logPath) {
		switch {
		case l.Msg == "rollback plan started":
			began = l.time()
		case l.Msg == "rollback plan finished":
			done = l.time()
		case l.Msg == "rollback step started" && l.Step == "verify":
			verifyFrom = l.time()
		case l.Msg == "rollback step done" && l.Step == "verify":
			verifyTo = l.time()
		}
	}
	if began.IsZero() || done.IsZero() || verifyFrom.IsZero() || verifyTo.IsZero() {
		return r, fmt.Errorf("%s: no plan start/finish or verify step in %s", method, logPath)
	}
	// Verify waits for data from after the rollout and then holds its
	// window (verifyWindow, 30s): a deliberate wait the script does not
	// have (it verifies nothing), taken out like the ramp pause.
	pauses += verifyTo.Sub(verifyFrom)
	r.wall = wall - pauses
	r.plan = done.Sub(began) - pauses
	return r, nil
}

func writeRollbackConfig(dir string, env sandboxenv.Env, name string, port int, pause time.Duration, revertMaxSurge string) (string, string, error) {
	path, token, err := writeDaemonConfig(dir, env, name, port, latencyConfig{window: time.Minute, interval: 5 * time.Second})
	if err != nil {
		return "", "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	// The same ramp pause as the script's sleep.
	b = []byte(strings.Replace(string(b), "rampPause: 1s", fmt.Sprintf("rampPause: %s\n      revertMaxSurge: %q", pause, revertMaxSurge), 1))
	return path, token, os.WriteFile(path, b, 0o644)
}
