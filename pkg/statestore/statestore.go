// Package statestore keeps rollguard's own state (incident records, the
// notifications not yet delivered, the Alertmanager alerts already taken
// up) as ConfigMaps in rollguard's own namespace, so that every replica
// reads the same state and a new leader continues where the last one
// stopped.
//
// Every write is a read-modify-write with a resourceVersion precondition:
// two writers (a leader and one that lost its lease but has not noticed
// yet) never overwrite each other; the loser re-reads and applies its
// change again. A ConfigMap holds at most MaxBytes of data: a change that
// would make it larger is refused with ErrTooLarge, before the API server
// is asked.
package statestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// MaxBytes bounds the data of one ConfigMap: the API server refuses more
// than 1 MiB, and the margin keeps room for the metadata.
const MaxBytes = 1<<20 - 32<<10

// Labels every object of the store carries.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "rollguard"
)

// Sentinel errors.
var (
	// ErrTooLarge: the change would make the ConfigMap larger than
	// MaxBytes.
	ErrTooLarge = errors.New("state object too large")
	// ErrConflict: the object kept changing under this writer.
	ErrConflict = errors.New("state object changed by another writer")
)

// Verdict is what a change asks to be done with the object.
type Verdict int

// Verdicts of a Change.
const (
	// Write the object (create it when absent).
	Write Verdict = iota
	// Keep leaves the object as it is (nothing changed).
	Keep
	// Delete the object.
	Delete
)

// Change edits cm in place; exists says whether it was stored. An error
// aborts the update and is returned as is.
type Change func(cm *corev1.ConfigMap, exists bool) (Verdict, error)

// Store is one namespace's state objects.
type Store struct {
	client corev1client.ConfigMapsGetter
	ns     string

	// last holds each object as last read or written, so an update starts
	// from it instead of reading again; a conflict re-reads.
	mu   sync.Mutex
	last map[string]*corev1.ConfigMap
}

// New returns the store of namespace ns.
func New(client corev1client.ConfigMapsGetter, ns string) *Store {
	return &Store{client: client, ns: ns, last: map[string]*corev1.ConfigMap{}}
}

// Namespace is the store's namespace.
func (s *Store) Namespace() string { return s.ns }

// maxAttempts bounds the re-reads after conflicts.
const maxAttempts = 8

// Update applies change to the ConfigMap name and stores the result.
func (s *Store) Update(ctx context.Context, name string, change Change) error {
	base := s.cached(name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		exists := true
		if base == nil {
			cm, err := s.client.ConfigMaps(s.ns).Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				exists = false
				cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns}}
			case err != nil:
				return fmt.Errorf("read configmap %s/%s: %w", s.ns, name, err)
			}
			base = cm
		}
		cm := base.DeepCopy()
		if cm.Labels == nil {
			cm.Labels = map[string]string{}
		}
		cm.Labels[LabelManagedBy] = ManagedBy
		verdict, err := change(cm, exists)
		if err != nil {
			return err
		}
		var out *corev1.ConfigMap
		switch verdict {
		case Keep:
			s.remember(name, base)
			return nil
		case Delete:
			if !exists {
				s.forget(name)
				return nil
			}
			rv := base.ResourceVersion
			err = s.client.ConfigMaps(s.ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
			if err == nil || apierrors.IsNotFound(err) {
				s.forget(name)
				return nil
			}
		case Write:
			if n := Size(cm); n > MaxBytes {
				return fmt.Errorf("configmap %s/%s: %d bytes of data, at most %d: %w", s.ns, name, n, MaxBytes, ErrTooLarge)
			}
			if exists {
				out, err = s.client.ConfigMaps(s.ns).Update(ctx, cm, metav1.UpdateOptions{})
			} else {
				out, err = s.client.ConfigMaps(s.ns).Create(ctx, cm, metav1.CreateOptions{})
			}
			if err == nil {
				s.remember(name, out)
				return nil
			}
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !(verdict == Delete && apierrors.IsInvalid(err)) {
			s.forget(name)
			return fmt.Errorf("write configmap %s/%s: %w", s.ns, name, err)
		}
		// Someone else wrote it since: start again from what is stored.
		s.forget(name)
		base = nil
	}
	return fmt.Errorf("configmap %s/%s: %w (%d attempts)", s.ns, name, ErrConflict, maxAttempts)
}

// Get reads the ConfigMap name; it returns nil, nil when there is none.
func (s *Store) Get(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	cm, err := s.client.ConfigMaps(s.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read configmap %s/%s: %w", s.ns, name, err)
	}
	return cm, nil
}

// List reads the ConfigMaps matching a label selector.
func (s *Store) List(ctx context.Context, selector string) ([]corev1.ConfigMap, error) {
	l, err := s.client.ConfigMaps(s.ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list configmaps %s (%s): %w", s.ns, selector, err)
	}
	return l.Items, nil
}

// Delete removes the ConfigMap name if it is still at resourceVersion rv
// (any version when rv is empty); one already gone is not an error.
func (s *Store) Delete(ctx context.Context, name, rv string) error {
	opts := metav1.DeleteOptions{}
	if rv != "" {
		opts.Preconditions = &metav1.Preconditions{ResourceVersion: &rv}
	}
	err := s.client.ConfigMaps(s.ns).Delete(ctx, name, opts)
	s.forget(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete configmap %s/%s: %w", s.ns, name, err)
	}
	return nil
}

// Size is the data a ConfigMap holds, as the API server counts it.
func Size(cm *corev1.ConfigMap) int {
	n := 0
	for k, v := range cm.Data {
		n += len(k) + len(v)
	}
	for k, v := range cm.BinaryData {
		n += len(k) + len(v)
	}
	return n
}

// maxCached bounds the objects remembered between updates.
const maxCached = 512

func (s *Store) cached(name string) *corev1.ConfigMap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[name]
}

func (s *Store) remember(name string, cm *corev1.ConfigMap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.last) >= maxCached {
		clear(s.last)
	}
	s.last[name] = cm
}

func (s *Store) forget(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.last, name)
}

// Doc is one JSON value kept under one key of one ConfigMap (a small
// piece of state written whole, like the alerts already taken up).
type Doc[T any] struct {
	s      *Store
	name   string
	labels map[string]string
}

// DocKey is the data key a Doc keeps its value under.
const DocKey = "state.json"

// NewDoc returns the document kept in ConfigMap name, labelled labels.
func NewDoc[T any](s *Store, name string, labels map[string]string) *Doc[T] {
	return &Doc[T]{s: s, name: name, labels: labels}
}

// Load reads the value; the zero T when none is stored.
func (d *Doc[T]) Load(ctx context.Context) (T, error) {
	var v T
	cm, err := d.s.Get(ctx, d.name)
	if err != nil || cm == nil {
		return v, err
	}
	d.s.remember(d.name, cm)
	raw, ok := cm.Data[DocKey]
	if !ok {
		return v, nil
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return v, fmt.Errorf("configmap %s/%s: %s: %w", d.s.ns, d.name, DocKey, err)
	}
	return v, nil
}

// Save stores v, replacing what was stored.
func (d *Doc[T]) Save(ctx context.Context, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("configmap %s/%s: encode: %w", d.s.ns, d.name, err)
	}
	return d.s.Update(ctx, d.name, func(cm *corev1.ConfigMap, _ bool) (Verdict, error) {
		for k, val := range d.labels {
			cm.Labels[k] = val
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[DocKey] = string(b)
		return Write, nil
	})
}
