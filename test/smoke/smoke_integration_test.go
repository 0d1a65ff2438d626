package smoke

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestSandboxClosedLoop proves the sandbox is a closed loop: an image change
// of a real Deployment moves the error ratio Prometheus computes from the
// simulator's series, and a row written on the primary reaches the
// subscriber, with slot lag that grows while the subscription is disabled
// and drains after it is enabled again.
func TestSandboxClosedLoop(t *testing.T) {
	env := sandboxenv.Load(t)
	t.Run("rollout moves the error ratio", func(t *testing.T) {
		t.Parallel()
		testRolloutErrorRatio(t, env)
	})
	t.Run("replication lags while disabled and catches up", func(t *testing.T) {
		t.Parallel()
		testReplicationLag(t, env)
	})
}

func testRolloutErrorRatio(t *testing.T, env sandboxenv.Env) {
	k := kubectl{
		bin:        filepath.Join(env.Get(t, "SANDBOX_BIN_DIR"), "kubectl"),
		kubeconfig: env.Get(t, "KUBECONFIG"),
	}
	promURL := env.Get(t, "PROMETHEUS_URL")
	ns := "smoke-" + sandboxfixture.RandomHex(t, 4)

	k.must(t, "", "create", "namespace", ns)
	t.Cleanup(func() {
		// Namespace deletion takes ~10 s; nothing waits for it.
		if _, err := k.run("", "delete", "namespace", ns, "--wait=false"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	k.must(t, deploymentYAML(ns, "pggit-api:v1.0.3", 4), "apply", "-f", "-")
	t.Logf("created deployment %s/pggit-api (4 replicas, pggit-api:v1.0.3)", ns)

	// The ratio of 5xx to all requests over a short window. The numerator's
	// `or vector(0)` makes a missing 5xx series read 0; the ratio as a whole
	// still has no result until the Deployment has traffic at all.
	sel := fmt.Sprintf(`namespace=%q,deployment="pggit-api"`, ns)
	ratio := fmt.Sprintf(`(sum(rate(http_requests_total{%s,status=~"5.."}[15s])) or vector(0)) / sum(rate(http_requests_total{%s}[15s]))`, sel, sel)

	step := func(image string, lo, hi float64) {
		t.Helper()
		start := time.Now()
		k.must(t, "", "rollout", "status", "deployment/pggit-api", "-n", ns, "--timeout=60s")
		t.Logf("%s: rollout complete in %v", image, time.Since(start).Round(time.Millisecond))
		// Settled means three polls in a row inside the band: a ratio still
		// moving between two versions crosses the band only once.
		inBand := 0
		waitFor(t, fmt.Sprintf("%s: error ratio settled in [%.2f, %.2f]", image, lo, hi), 60*time.Second, func(ctx context.Context) (bool, string, error) {
			v, ok, err := sandboxfixture.PromValue(ctx, promURL, ratio)
			if err != nil || !ok {
				inBand = 0
				return false, "no result yet", err
			}
			if v >= lo && v <= hi {
				inBand++
			} else {
				inBand = 0
			}
			return inBand >= 3, fmt.Sprintf("ratio %.4f", v), nil
		})
		t.Logf("%s: error ratio settled %v after the rollout began", image, time.Since(start).Round(time.Millisecond))
	}

	step("pggit-api:v1.0.3", 0, 0.01)

	k.must(t, "", "set", "image", "deployment/pggit-api", "-n", ns, "api=pggit-api:v1.1.0")
	// v1.1.0 fails 20 % of requests. The simulator spreads errors evenly
	// (no randomness), so only rate()'s extrapolation at the window's edges
	// moves the ratio off 0.20.
	step("pggit-api:v1.1.0", 0.18, 0.22)

	k.must(t, "", "set", "image", "deployment/pggit-api", "-n", ns, "api=pggit-api:v1.0.3")
	step("pggit-api:v1.0.3 (back)", 0, 0.01)
}

func testReplicationLag(t *testing.T, env sandboxenv.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary := connect(ctx, t, env.Get(t, "PG_PRIMARY_DSN"))
	subscriber := connect(ctx, t, env.Get(t, "PG_SUBSCRIBER_DSN"))
	subName := env.Get(t, "PG_SUBSCRIPTION")
	marker := "smoke-" + sandboxfixture.RandomHex(t, 4)

	insert := func(n int) {
		t.Helper()
		qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
		defer qcancel()
		_, err := primary.Exec(qctx, `INSERT INTO pggit.alert_delivery_queue (delivery_status, payload)
			SELECT 'pending', jsonb_build_object('smoke', $1::text, 'n', i) FROM generate_series(1, $2::int) AS i`, marker, n)
		if err != nil {
			t.Fatalf("insert %d rows on the primary: %v", n, err)
		}
	}
	countOn := func(ctx context.Context, c *pgx.Conn) (int, error) {
		var n int
		err := c.QueryRow(ctx, `SELECT count(*) FROM pggit.alert_delivery_queue WHERE payload->>'smoke' = $1`, marker).Scan(&n)
		return n, err
	}
	// slot reports the publisher side of the subscription's link, as the
	// fixture function pggit.measure_replication_lag() computes it.
	type slot struct {
		active bool
		bytes  *float64
		reason *string
	}
	readSlot := func(ctx context.Context) (slot, error) {
		var s slot
		err := primary.QueryRow(ctx, `SELECT link_active, lag_bytes, null_reason
			FROM pggit.measure_replication_lag() WHERE side = 'publisher' AND link_name = $1`, subName).
			Scan(&s.active, &s.bytes, &s.reason)
		return s, err
	}
	fmtBytes := func(b *float64) string {
		if b == nil {
			return "NULL"
		}
		return strconv.FormatFloat(*b, 'f', 0, 64)
	}

	insert(1)
	waitFor(t, "row replicated to the subscriber", 15*time.Second, func(ctx context.Context) (bool, string, error) {
		n, err := countOn(ctx, subscriber)
		return n == 1, fmt.Sprintf("%d of 1 rows", n), err
	})

	alter := func(ctx context.Context, verb string) error {
		_, err := subscriber.Exec(ctx, "ALTER SUBSCRIPTION "+pgx.Identifier{subName}.Sanitize()+" "+verb)
		return err
	}
	if err := alter(ctx, "DISABLE"); err != nil {
		t.Fatalf("disable subscription %s: %v", subName, err)
	}
	enabled := false
	t.Cleanup(func() {
		if enabled {
			return
		}
		// Never leave the shared sandbox's subscription disabled.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		c, err := pgx.Connect(cctx, env.Get(t, "PG_SUBSCRIBER_DSN"))
		if err != nil {
			t.Errorf("cleanup: re-enable subscription %s: %v", subName, err)
			return
		}
		defer c.Close(cctx)
		if _, err := c.Exec(cctx, "ALTER SUBSCRIPTION "+pgx.Identifier{subName}.Sanitize()+" ENABLE"); err != nil {
			t.Errorf("cleanup: re-enable subscription %s: %v", subName, err)
		}
	})
	t.Logf("subscription %s disabled", subName)
	var idle slot
	waitFor(t, "walsender detached from the slot", 15*time.Second, func(ctx context.Context) (bool, string, error) {
		s, err := readSlot(ctx)
		idle = s
		return err == nil && !s.active && s.bytes != nil, fmt.Sprintf("active=%v lag_bytes=%s", s.active, fmtBytes(s.bytes)), err
	})

	const more = 500
	insert(more)
	var lagged slot
	waitFor(t, "slot byte lag grew while disabled", 10*time.Second, func(ctx context.Context) (bool, string, error) {
		s, err := readSlot(ctx)
		lagged = s
		return err == nil && s.bytes != nil && *s.bytes > *idle.bytes && *s.bytes > 0,
			fmt.Sprintf("lag_bytes %s (before the writes %s)", fmtBytes(s.bytes), fmtBytes(idle.bytes)), err
	})
	t.Logf("slot lag while disabled: %s bytes after %d rows (reason for missing time lag: %s)",
		fmtBytes(lagged.bytes), more, deref(lagged.reason))
	if n, err := countOn(ctx, subscriber); err != nil || n != 1 {
		t.Fatalf("subscriber rows while disabled = %d, %v; want still 1", n, err)
	}

	if err := alter(ctx, "ENABLE"); err != nil {
		t.Fatalf("enable subscription %s: %v", subName, err)
	}
	enabled = true
	start := time.Now()
	waitFor(t, "subscriber caught up", 30*time.Second, func(ctx context.Context) (bool, string, error) {
		n, err := countOn(ctx, subscriber)
		if err != nil {
			return false, "", err
		}
		s, err := readSlot(ctx)
		if err != nil {
			return false, "", err
		}
		// Caught up: every row arrived and the slot's confirmed position is
		// back within a few WAL records of the primary's current one
		// (background WAL such as running-xacts records may land between).
		done := n == 1+more && s.active && s.bytes != nil && *s.bytes < 16*1024
		return done, fmt.Sprintf("%d of %d rows, active=%v lag_bytes=%s", n, 1+more, s.active, fmtBytes(s.bytes)), nil
	})
	t.Logf("caught up %v after ENABLE", time.Since(start).Round(time.Millisecond))
}

// waitFor polls check once a second until it reports done or the timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, check func(ctx context.Context) (done bool, status string, err error)) {
	t.Helper()
	sandboxfixture.WaitFor(t, what, timeout, time.Second, check)
}

type kubectl struct{ bin, kubeconfig string }

func (k kubectl) run(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (k kubectl) must(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := k.run(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func deploymentYAML(ns, image string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: pggit-api
  namespace: %s
  labels:
    app: pggit-api
    pggitsim.rollguard.io/simulate: "true"
spec:
  replicas: %d
  selector:
    matchLabels: {app: pggit-api}
  template:
    metadata:
      labels: {app: pggit-api}
    spec:
      containers:
      - name: api
        image: %s
`, ns, replicas, image)
}

func connect(ctx context.Context, t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(cctx)
	})
	return c
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}
