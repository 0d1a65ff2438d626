package incident

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/statestore"
)

// Labels and annotations of the incident objects. Every object carries
// LabelState; one holding a record carries LabelRecord and the incident
// and target labels; one holding notifications not yet delivered carries
// LabelOutbox.
const (
	LabelState            = "rollguard.io/state"
	StateIncident         = "incident"
	LabelRecord           = "rollguard.io/record"
	LabelOutbox           = "rollguard.io/outbox"
	LabelIncident         = "rollguard.io/incident"
	LabelTargetNamespace  = "rollguard.io/target-namespace"
	LabelTargetDeployment = "rollguard.io/target-deployment"
	LabelStatus           = "rollguard.io/status"
	AnnotationIncidentID  = "rollguard.io/incident-id"
	AnnotationUpdatedAt   = "rollguard.io/updated-at"
	AnnotationOpenedAt    = "rollguard.io/opened-at"

	KeyRecord   = "record.json"
	KeyMarkdown = "record.md"
	KeyOutbox   = "outbox.json"
)

// ErrOutboxFull: an incident object holds MaxPending undelivered events
// already.
var ErrOutboxFull = errors.New("outbox full")

// errUnchanged is a change that found nothing to change.
var errUnchanged = errors.New("unchanged")

// ClusterOptions configure a ClusterStore. Zero values take the defaults
// in brackets.
type ClusterOptions struct {
	Template Template
	// MaxRecords and MaxAge are the retention: Prune keeps the newest
	// MaxRecords records [200] updated within MaxAge [90 days].
	MaxRecords int
	MaxAge     time.Duration
	// MaxPending bounds the undelivered events kept per incident [200].
	MaxPending int
	// WriteTimeout bounds one write to the API server [10s].
	WriteTimeout time.Duration
	Now          func() time.Time
}

// ClusterStore keeps incident records, and the notifications not yet
// delivered (the notify.Outbox), in ConfigMaps of rollguard's namespace:
// one object per incident, labelled with its target and incident, holding
// the record (JSON and Markdown) and the pending events. Any replica reads
// the same records; a new leader delivers what an old one left pending.
//
// Writes to one object are queued and coalesced: what arrives while a
// write is in flight goes into the next one, in order.
type ClusterStore struct {
	st   *statestore.Store
	opts ClusterOptions
	log  *zap.Logger

	mu     sync.Mutex
	queues map[string]*opQueue
}

// NewClusterStore returns the store over st.
func NewClusterStore(st *statestore.Store, opts ClusterOptions, logger *zap.Logger) *ClusterStore {
	if opts.MaxRecords <= 0 {
		opts.MaxRecords = 200
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 90 * 24 * time.Hour
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 200
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &ClusterStore{st: st, opts: opts, log: logger, queues: map[string]*opQueue{}}
}

// Template returns the rendering template.
func (s *ClusterStore) Template() Template { return s.opts.Template }

// Namespace is where the objects are.
func (s *ClusterStore) Namespace() string { return s.st.Namespace() }

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// ObjectName is the ConfigMap of an incident (or of the notices of a
// target, see outboxKey): readable, and unique by a hash of the key.
func ObjectName(key string) string {
	sum := sha256.Sum256([]byte(key))
	slug := strings.Trim(nonName.ReplaceAllString(strings.ToLower(key), "-"), "-")
	if len(slug) > 40 {
		slug = strings.TrimRight(slug[:40], "-")
	}
	return "rollguard-incident-" + slug + "-" + hex.EncodeToString(sum[:])[:10]
}

var labelSafe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// labelValue is v when it is a valid label value, else a hash of it.
func labelValue(v string) string {
	if labelSafe.MatchString(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "h-" + hex.EncodeToString(sum[:])[:40]
}

// outboxKey is the object an event's pending deliveries go in: its
// incident's, or for an event outside any incident (a blind trigger) one
// per target.
func outboxKey(e notify.Event) string {
	if e.IncidentID != "" {
		return e.IncidentID
	}
	return notify.IncidentID(e.Target, "notices")
}

// doc is one object, decoded as its changes need it.
type doc struct {
	name    string
	key     string
	rec     *Record
	recJSON string
	recMD   string
	recErr  error
	pending []notify.Pending
	outErr  error
	touched bool
}

// op is one queued change of an object.
type op struct {
	key   string
	apply func(d *doc) error
	done  chan error
}

type opQueue struct {
	ops []op
}

// submit queues a change of the object of key and returns its Flush.
func (s *ClusterStore) submit(key string, apply func(d *doc) error) notify.Flush {
	name := ObjectName(key)
	o := op{key: key, apply: apply, done: make(chan error, 1)}
	s.mu.Lock()
	q := s.queues[name]
	start := q == nil
	if start {
		q = &opQueue{}
		s.queues[name] = q
	}
	q.ops = append(q.ops, o)
	s.mu.Unlock()
	if start {
		go s.drain(name)
	}
	return func(ctx context.Context) error {
		select {
		case err := <-o.done:
			o.done <- err // a Flush may be called again
			return err
		case <-ctx.Done():
			return fmt.Errorf("incident object %s: %w", name, ctx.Err())
		}
	}
}

// drain writes the object's queued changes until none are left. Each
// round takes everything queued so far into one write.
func (s *ClusterStore) drain(name string) {
	for {
		s.mu.Lock()
		q := s.queues[name]
		ops := q.ops
		q.ops = nil
		if len(ops) == 0 {
			delete(s.queues, name)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		errs := s.write(name, ops)
		for i, o := range ops {
			o.done <- errs[i]
		}
	}
}

// write applies ops to the object in one update. A change that fails
// (a malformed stored record, a record over its bound) fails alone.
func (s *ClusterStore) write(name string, ops []op) []error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
	defer cancel()
	errs := make([]error, len(ops))
	err := s.st.Update(ctx, name, func(cm *corev1.ConfigMap, _ bool) (statestore.Verdict, error) {
		d := s.decode(cm, ops[0].key)
		for i, o := range ops {
			errs[i] = o.apply(d)
			switch {
			case errors.Is(errs[i], errUnchanged):
				errs[i] = nil
			case errs[i] == nil:
				d.touched = true
			}
		}
		if !d.touched {
			return statestore.Keep, nil
		}
		return s.encode(cm, d)
	})
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	return errs
}

func (s *ClusterStore) decode(cm *corev1.ConfigMap, key string) *doc {
	d := &doc{name: cm.Name, key: key}
	if id := cm.Annotations[AnnotationIncidentID]; id != "" {
		d.key = id
	}
	if raw, ok := cm.Data[KeyRecord]; ok {
		d.recJSON, d.recMD = raw, cm.Data[KeyMarkdown]
		d.rec, d.recErr = Decode([]byte(raw))
		if d.recErr != nil {
			d.recErr = fmt.Errorf("incident %s: configmap %s/%s: %s: %w", d.key, s.st.Namespace(), cm.Name, KeyRecord, d.recErr)
		}
	}
	if raw, ok := cm.Data[KeyOutbox]; ok {
		if err := json.Unmarshal([]byte(raw), &d.pending); err != nil {
			d.outErr = fmt.Errorf("configmap %s/%s: %s: %w", s.st.Namespace(), cm.Name, KeyOutbox, err)
			d.pending = nil
		}
	}
	return d
}

func (s *ClusterStore) encode(cm *corev1.ConfigMap, d *doc) (statestore.Verdict, error) {
	if d.recJSON == "" && len(d.pending) == 0 {
		return statestore.Delete, nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Labels[LabelState] = StateIncident
	cm.Annotations[AnnotationIncidentID] = d.key
	cm.Annotations[AnnotationUpdatedAt] = s.opts.Now().UTC().Format(time.RFC3339Nano)
	if d.recJSON != "" {
		cm.Data[KeyRecord], cm.Data[KeyMarkdown] = d.recJSON, d.recMD
		cm.Labels[LabelRecord] = "true"
		cm.Labels[LabelIncident] = labelValue(d.key)
		if r := d.rec; r != nil {
			cm.Labels[LabelTargetNamespace] = labelValue(r.Namespace)
			cm.Labels[LabelTargetDeployment] = labelValue(r.Deployment)
			cm.Labels[LabelStatus] = labelValue(string(r.Status))
			cm.Annotations[AnnotationOpenedAt] = r.OpenedAt.UTC().Format(time.RFC3339Nano)
			cm.Annotations[AnnotationUpdatedAt] = r.UpdatedAt.UTC().Format(time.RFC3339Nano)
		}
	}
	if len(d.pending) > 0 {
		b, err := json.Marshal(d.pending)
		if err != nil {
			return statestore.Keep, fmt.Errorf("configmap %s: encode %s: %w", cm.Name, KeyOutbox, err)
		}
		cm.Data[KeyOutbox] = string(b)
		cm.Labels[LabelOutbox] = "true"
	} else {
		delete(cm.Data, KeyOutbox)
		delete(cm.Labels, LabelOutbox)
	}
	return statestore.Write, nil
}

// ---- records ----

// Record folds e into its incident's stored record (the Recorder's
// write). It waits until the record is stored.
func (s *ClusterStore) Record(ctx context.Context, e notify.Event) error {
	if err := checkID(e.IncidentID); err != nil {
		return err
	}
	return s.submit(e.IncidentID, func(d *doc) error {
		if d.recErr != nil {
			return d.recErr
		}
		r := &Record{}
		if d.recJSON != "" {
			var err error
			if r, err = Decode([]byte(d.recJSON)); err != nil {
				return err
			}
		}
		Apply(r, e)
		js, md, err := Encode(r, s.opts.Template)
		if err != nil {
			return err
		}
		d.rec, d.recJSON, d.recMD = r, string(js), md
		return nil
	})(ctx)
}

// Get reads the record id.
func (s *ClusterStore) Get(ctx context.Context, id string) (*Record, error) {
	cm, err := s.object(ctx, id)
	if err != nil {
		return nil, err
	}
	r, err := Decode([]byte(cm.Data[KeyRecord]))
	if err != nil {
		return nil, fmt.Errorf("incident %s: configmap %s/%s: %s: %w", id, s.st.Namespace(), cm.Name, KeyRecord, err)
	}
	return r, nil
}

// Markdown reads the rendered report of id.
func (s *ClusterStore) Markdown(ctx context.Context, id string) ([]byte, error) {
	cm, err := s.object(ctx, id)
	if err != nil {
		return nil, err
	}
	return []byte(cm.Data[KeyMarkdown]), nil
}

func (s *ClusterStore) object(ctx context.Context, id string) (*corev1.ConfigMap, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	cm, err := s.st.Get(ctx, ObjectName(id))
	if err != nil {
		return nil, fmt.Errorf("incident %s: %w", id, err)
	}
	if cm == nil || cm.Annotations[AnnotationIncidentID] != id {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	if _, ok := cm.Data[KeyRecord]; !ok {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	return cm, nil
}

// List returns every record's summary, newest first. An object whose
// record cannot be read is logged and left out: one bad object must not
// hide the others.
func (s *ClusterStore) List(ctx context.Context) ([]Summary, error) {
	cms, err := s.st.List(ctx, LabelState+"="+StateIncident+","+LabelRecord+"=true")
	if err != nil {
		return nil, fmt.Errorf("incident records: %w", err)
	}
	out := []Summary{}
	for i := range cms {
		cm := &cms[i]
		r, err := Decode([]byte(cm.Data[KeyRecord]))
		if err != nil {
			s.log.Warn("unreadable incident record left out of the list", zap.String("configmap", cm.Name), zap.Error(err))
			continue
		}
		out = append(out, summaryLine(r))
	}
	sortSummaries(out)
	return out, nil
}

func summaryLine(r *Record) Summary {
	return Summary{ID: r.ID, Target: r.Target, Trigger: r.Trigger, Severity: string(r.Severity),
		Status: r.Status, Summary: r.Summary, OpenedAt: r.OpenedAt, UpdatedAt: r.UpdatedAt}
}

func sortSummaries(out []Summary) {
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].OpenedAt.Equal(out[j].OpenedAt) {
			return out[i].OpenedAt.After(out[j].OpenedAt)
		}
		return out[i].ID < out[j].ID
	})
}

// Prune applies the retention: records beyond the newest MaxRecords, or
// not updated within MaxAge, are deleted. An object still holding
// undelivered notifications is kept until they are delivered. It returns
// how many records it deleted.
func (s *ClusterStore) Prune(ctx context.Context) (int, error) {
	cms, err := s.st.List(ctx, LabelState+"="+StateIncident+","+LabelRecord+"=true")
	if err != nil {
		return 0, fmt.Errorf("prune incident records: %w", err)
	}
	updated := func(cm *corev1.ConfigMap) time.Time {
		t, err := time.Parse(time.RFC3339Nano, cm.Annotations[AnnotationUpdatedAt])
		if err != nil {
			return cm.CreationTimestamp.Time
		}
		return t
	}
	sort.SliceStable(cms, func(i, j int) bool { return updated(&cms[i]).After(updated(&cms[j])) })
	now := s.opts.Now()
	deleted := 0
	for i := range cms {
		cm := &cms[i]
		if i < s.opts.MaxRecords && now.Sub(updated(cm)) <= s.opts.MaxAge {
			continue
		}
		if cm.Labels[LabelOutbox] == "true" {
			continue
		}
		if err := s.st.Delete(ctx, cm.Name, cm.ResourceVersion); err != nil {
			// Changed since the list (a late event): the next prune looks
			// again.
			s.log.Info("incident record not pruned", zap.String("configmap", cm.Name), zap.Error(err))
			continue
		}
		deleted++
		s.log.Info("incident record pruned", zap.String("incident", cm.Annotations[AnnotationIncidentID]),
			zap.Time("updated", updated(cm)), zap.Int("newer", i))
	}
	return deleted, nil
}

// ---- outbox (notify.Outbox) ----

// Add implements notify.Outbox: it stores entries in their incidents'
// objects.
func (s *ClusterStore) Add(entries []notify.Pending) notify.Flush {
	byKey := map[string][]notify.Pending{}
	var keys []string
	for _, p := range entries {
		k := outboxKey(p.Event)
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], p)
	}
	flushes := make([]notify.Flush, 0, len(keys))
	for _, k := range keys {
		add := byKey[k]
		flushes = append(flushes, s.submit(k, func(d *doc) error {
			if d.outErr != nil {
				// An unreadable outbox is replaced: losing its entries
				// is the lesser harm than never storing new ones.
				s.log.Error("unreadable outbox replaced", zap.String("configmap", d.name), zap.Error(d.outErr))
				d.outErr, d.pending = nil, nil
			}
			for _, p := range add {
				if i := findPending(d.pending, p.Event.ID); i >= 0 {
					d.pending[i] = p
					continue
				}
				if len(d.pending) >= s.opts.MaxPending {
					return fmt.Errorf("configmap %s: %d events pending: %w", d.name, len(d.pending), ErrOutboxFull)
				}
				d.pending = append(d.pending, p)
			}
			return nil
		}))
	}
	return all(flushes)
}

// Mark implements notify.Outbox.
func (s *ClusterStore) Mark(e notify.Event, notifier string, state notify.DeliveryState) notify.Flush {
	now := s.opts.Now()
	return s.submit(outboxKey(e), func(d *doc) error {
		i := findPending(d.pending, e.ID)
		if i < 0 {
			return errUnchanged
		}
		p := &d.pending[i]
		if state == notify.StateDone {
			delete(p.Notifiers, notifier)
		} else {
			p.Notifiers[notifier] = state
		}
		p.Updated = now
		if len(p.Notifiers) == 0 {
			d.pending = append(d.pending[:i], d.pending[i+1:]...)
		}
		return nil
	})
}

// Own implements notify.Outbox.
func (s *ClusterStore) Own(entries []notify.Pending, owner string) notify.Flush {
	now := s.opts.Now()
	flushes := make([]notify.Flush, 0, len(entries))
	for _, p := range entries {
		id := p.Event.ID
		flushes = append(flushes, s.submit(outboxKey(p.Event), func(d *doc) error {
			i := findPending(d.pending, id)
			if i < 0 {
				return errUnchanged
			}
			d.pending[i].Owner, d.pending[i].Updated = owner, now
			return nil
		}))
	}
	return all(flushes)
}

// Pending implements notify.Outbox: every stored entry, oldest event
// first.
func (s *ClusterStore) Pending(ctx context.Context) ([]notify.Pending, error) {
	cms, err := s.st.List(ctx, LabelState+"="+StateIncident+","+LabelOutbox+"=true")
	if err != nil {
		return nil, fmt.Errorf("pending notifications: %w", err)
	}
	var out []notify.Pending
	for i := range cms {
		var ps []notify.Pending
		if err := json.Unmarshal([]byte(cms[i].Data[KeyOutbox]), &ps); err != nil {
			s.log.Error("unreadable outbox skipped", zap.String("configmap", cms[i].Name), zap.Error(err))
			continue
		}
		out = append(out, ps...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Event.Time.Equal(out[j].Event.Time) {
			return out[i].Event.Time.Before(out[j].Event.Time)
		}
		return out[i].Event.ID < out[j].Event.ID
	})
	return out, nil
}

func findPending(ps []notify.Pending, id string) int {
	for i := range ps {
		if ps[i].Event.ID == id {
			return i
		}
	}
	return -1
}

// all waits for every flush and returns the first error.
func all(fs []notify.Flush) notify.Flush {
	return func(ctx context.Context) error {
		var first error
		for _, f := range fs {
			if err := f(ctx); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}
