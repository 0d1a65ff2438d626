package leader

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes/fake"
)

func TestOptionsValidated(t *testing.T) {
	_, err := New(fake.NewClientset(), Options{Namespace: "rg", Name: "rg", Identity: "a",
		LeaseDuration: 10 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}, zap.NewNop(), nil)
	want := "leader election: need leaseDuration > renewDeadline > 1.2 × retryPeriod, got 10s, 10s, 2s"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// TestHandover runs two electors on one (fake) API: exactly one leads, and
// when it shuts down its work stops before the other takes over.
func TestHandover(t *testing.T) {
	client := fake.NewClientset()
	opts := func(id string) Options {
		return Options{Namespace: "rollguard", Name: "rollguard", Identity: id,
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}
	}
	var leading atomic.Int32 // replicas inside lead() right now
	var maxLeading atomic.Int32
	lead := func(ctx context.Context) {
		n := leading.Add(1)
		for {
			m := maxLeading.Load()
			if n <= m || maxLeading.CompareAndSwap(m, n) {
				break
			}
		}
		<-ctx.Done()
		leading.Add(-1)
	}
	a, err := New(client, opts("a"), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(client, opts("b"), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	errA := make(chan error, 1)
	go func() { errA <- a.Run(ctxA, lead) }()
	waitFor(t, "a leads", a.IsLeader)
	go func() { _ = b.Run(ctxB, lead) }()
	time.Sleep(500 * time.Millisecond) // the lease records whole seconds: keep LeaseDuration ≥ 2 s
	if b.IsLeader() {
		t.Fatal("b leads while a holds the lease")
	}
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Fatalf("a.Run = %v, want context.Canceled", err)
	}
	if a.IsLeader() {
		t.Fatal("a still reports leadership after Run returned")
	}
	waitFor(t, "b leads after a released the lease", b.IsLeader)
	if m := maxLeading.Load(); m != 1 {
		t.Fatalf("%d replicas led at once", m)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLookupFollowsTheHolder: the lease names the leader's address while
// it leads, the next leader's after a handover, and none once released.
func TestLookupFollowsTheHolder(t *testing.T) {
	client := fake.NewClientset()
	opts := func(id string) Options {
		return Options{Namespace: "rollguard", Name: "rollguard", Identity: id, Address: "http://" + id + ":9847",
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}
	}
	lookup := func() (Holder, error) {
		return Lookup(context.Background(), client.CoordinationV1(), "rollguard", "rollguard", time.Now())
	}
	if _, err := lookup(); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("before any election: %v, want ErrNoLeader", err)
	}
	a, _ := New(client, opts("a"), zap.NewNop(), nil)
	b, _ := New(client, opts("b"), zap.NewNop(), nil)
	lead := func(ctx context.Context) { <-ctx.Done() }
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelA()
	doneA, doneB := make(chan struct{}), make(chan struct{})
	go func() { defer close(doneA); _ = a.Run(ctxA, lead) }()
	waitFor(t, "a leads", a.IsLeader)
	go func() { defer close(doneB); _ = b.Run(ctxB, lead) }()
	if h, err := b.Lookup(context.Background()); err != nil || h.Identity != "a" || h.Address != "http://a:9847" {
		t.Fatalf("lookup while a leads = %+v, %v", h, err)
	}
	cancelA()
	<-doneA
	waitFor(t, "b leads", b.IsLeader)
	waitFor(t, "the lease names b's address", func() bool {
		h, err := lookup()
		return err == nil && h.Identity == "b" && h.Address == "http://b:9847"
	})
	cancelB()
	<-doneB
	if h, err := lookup(); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("after b released the lease: %+v, %v; want ErrNoLeader", h, err)
	}
}
