package statestore

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const ns = "rollguard"

func set(k, v string) Change {
	return func(cm *corev1.ConfigMap, _ bool) (Verdict, error) {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[k] = v
		return Write, nil
	}
}

func TestUpdateCreatesUpdatesDeletes(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	s := New(c.CoreV1(), ns)
	if err := s.Update(ctx, "a", set("k", "1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, "a", set("j", "2")); err != nil {
		t.Fatal(err)
	}
	cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "a", metav1.GetOptions{})
	if err != nil || cm.Data["k"] != "1" || cm.Data["j"] != "2" || cm.Labels[LabelManagedBy] != ManagedBy {
		t.Fatalf("stored %+v, %v", cm, err)
	}
	if err := s.Update(ctx, "a", func(*corev1.ConfigMap, bool) (Verdict, error) { return Delete, nil }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "a"); got != nil || err != nil {
		t.Fatalf("after delete: %v, %v", got, err)
	}
	// Deleting what is not there is nothing.
	if err := s.Update(ctx, "b", func(*corev1.ConfigMap, bool) (Verdict, error) { return Delete, nil }); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateConflict: another writer changed the object since this store
// last saw it; the change is applied again to what is stored, and the
// other writer's data survives.
func TestUpdateConflict(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	s := New(c.CoreV1(), ns)
	if err := s.Update(ctx, "a", set("mine", "1")); err != nil {
		t.Fatal(err)
	}
	// The other writer.
	cm, _ := c.CoreV1().ConfigMaps(ns).Get(ctx, "a", metav1.GetOptions{})
	cm.Data["theirs"] = "x"
	if _, err := c.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	conflicts := 1
	c.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "a", errors.New("stale"))
		}
		return false, nil, nil
	})
	applied := 0
	err := s.Update(ctx, "a", func(cm *corev1.ConfigMap, exists bool) (Verdict, error) {
		applied++
		cm.Data["mine"] = "2"
		return Write, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := c.CoreV1().ConfigMaps(ns).Get(ctx, "a", metav1.GetOptions{})
	if applied != 2 || got.Data["mine"] != "2" || got.Data["theirs"] != "x" {
		t.Fatalf("applied %d times, stored %v; want 2 and both writers' data", applied, got.Data)
	}
}

func TestUpdateTooLarge(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	s := New(c.CoreV1(), ns)
	err := s.Update(ctx, "a", set("k", strings.Repeat("x", MaxBytes)))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "configmap rollguard/a") {
		t.Fatalf("err = %v, want ErrTooLarge naming the object", err)
	}
	if got, _ := s.Get(ctx, "a"); got != nil {
		t.Fatal("a refused change was written")
	}
}

func TestDoc(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	s := New(c.CoreV1(), ns)
	d := NewDoc[map[string]int](s, "alerts", map[string]string{"rollguard.io/state": "alerts"})
	v, err := d.Load(ctx)
	if err != nil || v != nil {
		t.Fatalf("empty load = %v, %v", v, err)
	}
	if err := d.Save(ctx, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if v, err = d.Load(ctx); err != nil || v["a"] != 1 {
		t.Fatalf("load = %v, %v", v, err)
	}
	cm, _ := s.Get(ctx, "alerts")
	if cm.Labels["rollguard.io/state"] != "alerts" {
		t.Errorf("labels %v", cm.Labels)
	}
	cm.Data[DocKey] = "{not json"
	if _, err := c.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Load(ctx); err == nil || !strings.Contains(err.Error(), "configmap rollguard/alerts: state.json") {
		t.Fatalf("malformed load err = %v, want one naming the object and key", err)
	}
}
