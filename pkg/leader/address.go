package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Annotations of the Lease that say where its holder answers. They are
// written in the same update as the holder identity (by the holder, on
// each acquire and renew), so a reader never pairs one leader's identity
// with another's address; a reader still checks that the identity
// annotation names the holder, since an older rollguard that does not
// write them may hold the lease.
const (
	AnnotationHolder  = "rollguard.io/leader-identity"
	AnnotationAddress = "rollguard.io/leader-address"
)

// ErrNoLeader: no replica holds the lease now, or its holder published no
// address.
var ErrNoLeader = errors.New("no leader address known")

// Holder is the replica holding the lease.
type Holder struct {
	Identity string
	// Address is the base URL of its API (http://10.0.0.7:9847).
	Address string
	// RenewTime and Duration say until when the lease is valid.
	RenewTime time.Time
	Duration  time.Duration
}

// Lookup reads the lease ns/name and returns its holder and the address
// it published. A lease expired for more than a whole lease duration (its
// holder is gone and no one took over) has no leader.
func Lookup(ctx context.Context, client coordinationv1client.LeasesGetter, ns, name string, now time.Time) (Holder, error) {
	lease, err := client.Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Holder{}, fmt.Errorf("lease %s/%s: %w", ns, name, ErrNoLeader)
	}
	if err != nil {
		return Holder{}, fmt.Errorf("read lease %s/%s: %w", ns, name, err)
	}
	h := Holder{Identity: deref(lease.Spec.HolderIdentity)}
	if lease.Spec.RenewTime != nil {
		h.RenewTime = lease.Spec.RenewTime.Time
	}
	if lease.Spec.LeaseDurationSeconds != nil {
		h.Duration = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	switch {
	case h.Identity == "":
		return h, fmt.Errorf("lease %s/%s has no holder: %w", ns, name, ErrNoLeader)
	case !h.RenewTime.IsZero() && now.Sub(h.RenewTime) > 2*h.Duration:
		return h, fmt.Errorf("lease %s/%s of %s expired at %s: %w", ns, name, h.Identity, h.RenewTime.Add(h.Duration).UTC().Format(time.RFC3339), ErrNoLeader)
	case lease.Annotations[AnnotationHolder] != h.Identity || lease.Annotations[AnnotationAddress] == "":
		return h, fmt.Errorf("lease %s/%s: holder %s published no address: %w", ns, name, h.Identity, ErrNoLeader)
	}
	h.Address = lease.Annotations[AnnotationAddress]
	return h, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// addressLock is client-go's LeaseLock that also publishes the holder's
// address: on every write by this replica as the holder, the annotations
// name it and its address; on a write that gives the lease up (the
// release on shutdown), they are removed.
type addressLock struct {
	meta   metav1.ObjectMeta
	client coordinationv1client.LeasesGetter
	id     string

	mu      sync.Mutex
	address string
	lease   *coordinationv1.Lease
}

var _ resourcelock.Interface = (*addressLock)(nil)

func (l *addressLock) setAddress(a string) {
	l.mu.Lock()
	l.address = a
	l.mu.Unlock()
}

func (l *addressLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	lease, err := l.client.Leases(l.meta.Namespace).Get(ctx, l.meta.Name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	l.lease = lease
	l.mu.Unlock()
	rec := resourcelock.LeaseSpecToLeaderElectionRecord(&lease.Spec)
	raw, err := json.Marshal(*rec)
	if err != nil {
		return nil, nil, err
	}
	return rec, raw, nil
}

func (l *addressLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: l.meta.Name, Namespace: l.meta.Namespace},
		Spec: resourcelock.LeaderElectionRecordToLeaseSpec(&ler)}
	l.annotate(lease, ler.HolderIdentity)
	return l.remember(l.client.Leases(l.meta.Namespace).Create(ctx, lease, metav1.CreateOptions{}))
}

func (l *addressLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	l.mu.Lock()
	if l.lease == nil {
		l.mu.Unlock()
		return errors.New("lease not initialized, call get or create first")
	}
	lease := l.lease.DeepCopy()
	l.mu.Unlock()
	lease.Spec = resourcelock.LeaderElectionRecordToLeaseSpec(&ler)
	l.annotate(lease, ler.HolderIdentity)
	return l.remember(l.client.Leases(l.meta.Namespace).Update(ctx, lease, metav1.UpdateOptions{}))
}

// remember keeps the lease the API server answered a write with: the next
// Update starts from it.
func (l *addressLock) remember(out *coordinationv1.Lease, err error) error {
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.lease = out
	l.mu.Unlock()
	return nil
}

// annotate sets the address annotations for holder when it is this
// replica, and removes them when this replica writes the lease for no one
// (its release).
func (l *addressLock) annotate(lease *coordinationv1.Lease, holder string) {
	l.mu.Lock()
	addr := l.address
	l.mu.Unlock()
	if holder == l.id && addr != "" {
		if lease.Annotations == nil {
			lease.Annotations = map[string]string{}
		}
		lease.Annotations[AnnotationHolder] = l.id
		lease.Annotations[AnnotationAddress] = addr
		return
	}
	delete(lease.Annotations, AnnotationHolder)
	delete(lease.Annotations, AnnotationAddress)
}

func (l *addressLock) RecordEvent(string) {}

func (l *addressLock) Identity() string { return l.id }

func (l *addressLock) Describe() string { return l.meta.Namespace + "/" + l.meta.Name }
