package rollback_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// stepClock is a clock that Sleep moves forward.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func clockExecutor(c *kubetest.Cluster, clk *stepClock, obs rollback.Observer) *rollback.Executor {
	d := kube.New(c, kube.Options{PollInterval: time.Millisecond, Now: fixedNow}, zap.NewNop())
	return rollback.NewExecutor(d, c.CoreV1(), rollback.Options{Observer: obs, Now: clk.Now, Sleep: clk.Sleep, PollInterval: time.Second}, zap.NewNop())
}

// signals is a Verifier whose queries read lookback of history and whose
// readings at an instant come from read; it records the instants asked.
type signals struct {
	lookback time.Duration
	read     func(at time.Time) []rollback.Signal

	mu    sync.Mutex
	asked []time.Time
}

func (s *signals) Lookback(string, string) time.Duration { return s.lookback }

func (s *signals) Verify(_ context.Context, _, _ string, at time.Time) []rollback.Signal {
	s.mu.Lock()
	s.asked = append(s.asked, at)
	s.mu.Unlock()
	return s.read(at)
}

func ok(at time.Time) []rollback.Signal {
	return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalOK, Detail: "= 0.001 (above 0.05)"}}
}

// The verify step holds its checks for the whole window it promises, not
// until the first poll that passes.
func TestVerifyHoldsForItsWindow(t *testing.T) {
	c := newCluster(t)
	clk := &stepClock{t: fixedNow()}
	tg := target()
	tg.VerifyWindow = 30 * time.Second
	v := &signals{read: ok}
	tg.Verifier = v
	res, err := clockExecutor(c, clk, nil).Run(context.Background(), rollback.Request{Target: tg})
	if err != nil {
		t.Fatal(err)
	}
	st := journalStep(t, journal(t, c), rollback.StepVerify)
	if took := st.Finished.Sub(*st.Started); took < tg.VerifyWindow || len(v.asked) != 31 {
		t.Errorf("verify took %v asking %d times; want the whole window %v, a poll a second", took, len(v.asked), tg.VerifyWindow)
	}
	if res.Unverified != "" || !strings.HasPrefix(st.Detail, "held 30s (31 polls): error-rate = 0.001 (above 0.05); deployment production/pggit-api api=pggit-api:v1.0.3, 4 replicas asked") {
		t.Errorf("unverified %q, detail %q", res.Unverified, st.Detail)
	}
}

// With rate(...[1m]) the queries average the bad version's errors for a
// minute after the rollout: verify waits until its queries read only data
// that postdates the rollout, and a working rollback is not reported as
// failed.
func TestVerifyJudgesOnlyDataAfterTheRollout(t *testing.T) {
	for _, pause := range []time.Duration{time.Second, 30 * time.Second} {
		t.Run("ramp pause "+pause.String(), func(t *testing.T) {
			c := newCluster(t)
			clk := &stepClock{t: fixedNow()}
			tg := target()
			tg.RampPause, tg.VerifyWindow = pause, 5*time.Second
			var rolledOut time.Time
			v := &signals{lookback: time.Minute, read: func(at time.Time) []rollback.Signal {
				if at.Before(rolledOut.Add(time.Minute)) {
					return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalBreach, Detail: "= 0.2 (above 0.05)"}}
				}
				return ok(at)
			}}
			tg.Verifier = v
			obs := &recorder{hook: func(kind string, f rollback.Facts) {
				if kind == "step-finished" && f.Step == rollback.StepWaitRollout {
					rolledOut = f.Finished
				}
			}}
			if _, err := clockExecutor(c, clk, obs).Run(context.Background(), rollback.Request{Target: tg}); err != nil {
				t.Fatalf("a working rollback reported as %v", err)
			}
			if first := v.asked[0]; !first.Equal(rolledOut.Add(time.Minute)) {
				t.Errorf("first judged %v after the rollout, want 1m", first.Sub(rolledOut))
			}
			// The ramp's pause counts: only the rest of the minute is waited.
			st := journalStep(t, journal(t, c), rollback.StepVerify)
			waited := time.Minute - st.Started.Sub(rolledOut)
			if !strings.HasPrefix(st.Detail, "held 5s (6 polls) after waiting "+waited.String()+" for data that postdates the rollout: ") {
				t.Errorf("detail %q, want it to say it waited %s", st.Detail, waited)
			}
		})
	}
}

// A breach in data that postdates the rollout fails verify at once.
func TestVerifyFailsOnABreachAfterTheRollout(t *testing.T) {
	c := newCluster(t)
	clk := &stepClock{t: fixedNow()}
	tg := target()
	tg.VerifyWindow = 30 * time.Second
	v := &signals{read: func(time.Time) []rollback.Signal {
		return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalBreach, Detail: "= 0.2 (above 0.05)"}}
	}}
	tg.Verifier = v
	_, err := clockExecutor(c, clk, nil).Run(context.Background(), rollback.Request{Target: tg})
	if !errors.Is(err, rollback.ErrUnhealthy) || !strings.Contains(err.Error(), "still breaching after the rollback: error-rate = 0.2 (above 0.05)") {
		t.Fatalf("err = %v", err)
	}
	if len(v.asked) != 1 {
		t.Errorf("asked %d times, want the first breach to end it", len(v.asked))
	}
}

// No data is never a verified recovery: the plan is done (the previous
// version runs), but the run says unverified and what is known.
func TestVerifyWithoutDataIsUnverified(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(time.Time) []rollback.Signal
		want string
	}{
		{
			name: "source down",
			read: func(time.Time) []rollback.Signal {
				return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalNoData, Detail: "prometheus query: unreachable"}}
			},
			want: "no data to judge by: error-rate no data at 4 of 4 polls (prometheus query: unreachable), health ",
		},
		{
			name: "data at some polls only",
			read: func(at time.Time) []rollback.Signal {
				if at.Second()%2 == 0 {
					return ok(at)
				}
				return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalNoData, Detail: "empty result"}}
			},
			want: "no data to judge by: error-rate no data at 2 of 4 polls (empty result), health ",
		},
		{
			name: "too little traffic",
			read: func(time.Time) []rollback.Signal {
				return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalLowVolume, Detail: "0.2 requests/s < minRate 1"}}
			},
			want: "no data to judge by: error-rate low volume at 4 of 4 polls (0.2 requests/s < minRate 1), health ",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			clk := &stepClock{t: fixedNow()}
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			defer srv.Close()
			tg := target()
			tg.HealthURL = srv.URL
			tg.Verifier = &signals{read: tc.read}
			obs := &recorder{}
			res, err := clockExecutor(c, clk, obs).Run(context.Background(), rollback.Request{Target: tg})
			if err != nil {
				t.Fatalf("err = %v: the plan ran to its end", err)
			}
			wantTail := "200, deployment production/pggit-api api=pggit-api:v1.0.3, 4 replicas asked"
			if !strings.HasPrefix(res.Unverified, tc.want+srv.URL+" 200; ") || !strings.Contains(res.Unverified, "api=pggit-api:v1.0.3, 4 replicas asked") {
				t.Errorf("unverified = %q\nwant %q...%q", res.Unverified, tc.want+srv.URL, wantTail)
			}
			j := journal(t, c)
			st := journalStep(t, j, rollback.StepVerify)
			if j.State != rollback.RunSucceeded || j.Unverified != res.Unverified || st.State != rollback.StepDone || !strings.HasPrefix(st.Detail, "UNVERIFIED: held 3s (4 polls): ") {
				t.Errorf("journal %s unverified %q, verify %s %q", j.State, j.Unverified, st.State, st.Detail)
			}
			last := obs.facts[len(obs.facts)-1]
			if last.Unverified != res.Unverified || last.Err != nil {
				t.Errorf("plan-finished facts: unverified %q err %v", last.Unverified, last.Err)
			}
		})
	}
}
