package rollback_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rollguard/rollguard/pkg/rollback"
)

// A run that stops says exactly what it left: the version in place, the
// replicas asked of the recorded count, and what a human must decide.
func TestStoppedRunSaysTheStateLeftBehind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(*testing.T, *rollback.Target, *clusterFaults)
		summary string
		detail  []string
	}{
		{
			name: "previous version unhealthy at the ramp",
			prepare: func(t *testing.T, tg *rollback.Target, _ *clusterFaults) {
				sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
				t.Cleanup(sick.Close)
				tg.HealthURL = sick.URL
			},
			summary: "left at 2 of 4 replicas of " + good + " (2 available)",
			detail: []string{"deployment production/pggit-api api=" + good + ", 2 replicas asked, 2 updated, 2 ready, 2 available; ",
				"the previous version " + good + " is in place at 2 of the 4 recorded replicas (2 available); the bad version " + bad + " is not running",
				"scale it to the recorded count (kubectl -n production scale deployment/pggit-api --replicas=4)", "rollguard will not put " + bad + " back"},
		},
		{
			name: "stopped, then the template write failed",
			prepare: func(_ *testing.T, _ *rollback.Target, f *clusterFaults) {
				f.failTemplate = true
			},
			summary: "left at 0 of 4 replicas of " + bad + " (0 available)",
			detail:  []string{"the bad version " + bad + " is still the template, at 0 of the 4 recorded replicas: the service is DOWN", "kubectl -n production scale deployment/pggit-api --replicas=4"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			f := &clusterFaults{}
			c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if f.failTemplate && a.GetSubresource() == "" {
					return true, nil, errors.New("etcd is having a bad day")
				}
				return false, nil, nil
			})
			tg := target()
			tc.prepare(t, &tg, f)
			obs := &recorder{}
			res, err := newExecutor(c, obs).Run(context.Background(), rollback.Request{Target: tg})
			if err == nil {
				t.Fatal("the run did not stop")
			}
			s := res.StateLeftBehind
			if s == nil || s.Summary != tc.summary {
				t.Fatalf("state left behind %+v, want summary %q", s, tc.summary)
			}
			for _, w := range tc.detail {
				if !strings.Contains(s.Detail, w) {
					t.Errorf("detail %q lacks %q", s.Detail, w)
				}
			}
			if j := journal(t, c); j.StateLeftBehind == nil || *j.StateLeftBehind != *s {
				t.Errorf("journal state left behind %+v, want %+v", j.StateLeftBehind, s)
			}
			if last := obs.facts[len(obs.facts)-1]; last.StateLeftBehind == nil || *last.StateLeftBehind != *s {
				t.Errorf("plan-finished facts %+v", last.StateLeftBehind)
			}
		})
	}
}

type clusterFaults struct{ failTemplate bool }
