package app

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/console"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/plan"
)

var tc0 = time.Date(2026, 3, 14, 3, 0, 0, 0, time.UTC)

// rs is a ReplicaSet of dep's at revision n running image.
func rs(n int64, image string, ready int32) appsv1.ReplicaSet {
	d := kubetest.NewDeployment("prod", "api", 2, map[string]string{"api": image})
	hash := fmt.Sprintf("h%d", n)
	tmpl := *d.Spec.Template.DeepCopy()
	tmpl.Labels[kube.PodTemplateHashLabel] = hash
	replicas := int32(2)
	return appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "api-" + hash, Labels: map[string]string{kube.PodTemplateHashLabel: hash},
			Annotations: map[string]string{kube.RevisionAnnotation: fmt.Sprint(n)}, CreationTimestamp: metav1.NewTime(tc0.Add(time.Duration(n) * time.Hour))},
		Spec:   appsv1.ReplicaSetSpec{Replicas: &replicas, Template: tmpl},
		Status: appsv1.ReplicaSetStatus{ReadyReplicas: ready},
	}
}

func TestRevisions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		image     string
		rss       []appsv1.ReplicaSet
		cur, prev string // "revision image"
	}{
		{name: "bad deploy over a good one", image: "api:v2", rss: []appsv1.ReplicaSet{rs(1, "api:v1", 0), rs(2, "api:v2", 2)},
			cur: "2 api=api:v2", prev: "1 api=api:v1"},
		{name: "restart of the same version is skipped", image: "api:v2", rss: []appsv1.ReplicaSet{rs(3, "api:v2", 2), rs(1, "api:v1", 0)},
			cur: "3 api=api:v2", prev: "1 api=api:v1"},
		{name: "after a rollback the bad one is the previous", image: "api:v1", rss: []appsv1.ReplicaSet{rs(2, "api:v2", 0), rs(3, "api:v1", 2)},
			cur: "3 api=api:v1", prev: "2 api=api:v2"},
		{name: "first deploy", image: "api:v1", rss: []appsv1.ReplicaSet{rs(1, "api:v1", 2)}, cur: "1 api=api:v1"},
		{name: "replicaset not created yet", image: "api:v3", rss: []appsv1.ReplicaSet{rs(1, "api:v1", 2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dep := kubetest.NewDeployment("prod", "api", 2, map[string]string{"api": tc.image})
			cur, prev := revisions(dep, tc.rss)
			str := func(r *console.Revision) string {
				if r == nil {
					return ""
				}
				return fmt.Sprintf("%d %s", r.Number, r.Images)
			}
			if str(cur) != tc.cur || str(prev) != tc.prev {
				t.Errorf("current %q previous %q, want %q and %q", str(cur), str(prev), tc.cur, tc.prev)
			}
			if cur != nil && (cur.Desired != 2 || cur.Created.IsZero() || cur.Hash == "") {
				t.Errorf("current %+v lacks replicas, age or hash", cur)
			}
		})
	}
}

func TestFreezeSetter(t *testing.T) {
	dep := kubetest.NewDeployment("prod", "api", 2, map[string]string{"api": "api:v1"})
	at := metav1.NewTime(tc0)
	later := metav1.NewTime(tc0.Add(time.Minute))
	dep.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, Time: &later,
			FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}}}}`)}},
		{Manager: "kubectl-annotate", Operation: metav1.ManagedFieldsOperationUpdate, Time: &at,
			FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:rollguard.io/freeze":{}}}}`)}},
		{Manager: "broken", FieldsV1: &metav1.FieldsV1{Raw: []byte(`not json`)}},
	}
	who, when := freezeSetter(dep)
	if who != "kubectl-annotate" || !when.Equal(tc0) {
		t.Errorf("freezeSetter = %q at %v, want kubectl-annotate at %v", who, when, tc0)
	}
	dep.ManagedFields = nil
	if who, _ := freezeSetter(dep); who != "" {
		t.Errorf("no managed fields: %q", who)
	}
}

func TestPlanChoices(t *testing.T) {
	for _, tc := range []struct {
		name string
		rb   config.Rollback
		want []string
	}{
		{"quick", config.Rollback{Strategy: plan.Quick}, []string{"quick", "revert"}},
		{"revert first", config.Rollback{Strategy: "revert"}, []string{"revert", "quick"}},
		{"database", config.Rollback{Strategy: plan.Quick, Database: &config.RollbackDatabase{}}, []string{"quick", "revert", "full", "pool-recovery"}},
		{"multi-region", config.Rollback{Strategy: plan.Quick, MultiRegion: &config.MultiRegion{}}, []string{"multi-region", "quick", "revert"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := planChoices(&config.Target{Rollback: tc.rb}); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("planChoices = %v, want %v", got, tc.want)
			}
		})
	}
}
