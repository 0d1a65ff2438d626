package incident

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/statestore"
)

// Writer stores records: Record folds e into its incident's record. A
// Store (a directory) and a ClusterStore (ConfigMaps) are Writers.
type Writer interface {
	Record(ctx context.Context, e notify.Event) error
}

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// Alarm, when set, is handed a KindRecordFailed event when a record
	// cannot be stored (for good, or for AlarmAfter): the rollback goes
	// on without its record, and a human is told.
	Alarm func(notify.Event)
	// AlarmAfter is how long a record may keep failing with an error
	// worth retrying before the alarm [1m].
	AlarmAfter time.Duration
	Now        func() time.Time
}

// Recorder is the notify.Notifier that writes the incident record: it sits
// in the delivery Queue beside PagerDuty and Slack, so it sees the same
// events in the same order, and a slow store never delays the rollback.
// Each event is applied to the stored record (read back from the store,
// so a restarted rollguard, or the next leader, continues the same
// record).
type Recorder struct {
	store  Writer
	opts   RecorderOptions
	logger *zap.Logger

	mu sync.Mutex
	// failing is when each incident's record started failing; alarmed
	// when the alarm went out (once an hour at most).
	failing map[string]time.Time
	alarmed map[string]time.Time
}

// NewRecorder returns a Recorder writing to store.
func NewRecorder(store Writer, logger *zap.Logger) *Recorder {
	return NewRecorderWith(store, RecorderOptions{}, logger)
}

// NewRecorderWith returns a Recorder writing to store with opts.
func NewRecorderWith(store Writer, opts RecorderOptions, logger *zap.Logger) *Recorder {
	if logger == nil {
		logger = zap.NewNop()
	}
	if opts.AlarmAfter <= 0 {
		opts.AlarmAfter = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Recorder{store: store, opts: opts, logger: logger, failing: map[string]time.Time{}, alarmed: map[string]time.Time{}}
}

// Name implements notify.Notifier.
func (r *Recorder) Name() string { return "incident" }

// Notify implements notify.Notifier. Events without an incident (tests,
// blindness of a target with no incident) are not recorded, nor is the
// alarm about a record (it would fail the same way).
func (r *Recorder) Notify(ctx context.Context, e notify.Event) error {
	if e.IncidentID == "" || e.Kind == notify.KindTest || e.Kind == notify.KindRecordFailed {
		return nil
	}
	err := r.store.Record(ctx, e)
	if err == nil {
		r.mu.Lock()
		delete(r.failing, e.IncidentID)
		r.mu.Unlock()
		if e.Kind == notify.KindDetected || e.Kind == notify.KindRollbackSucceeded || e.Kind == notify.KindRollbackFailed {
			r.logger.Info("incident record updated", zap.String("incident", e.IncidentID), zap.String("kind", string(e.Kind)))
		}
		return nil
	}
	permanent := permanentError(err)
	r.logger.Warn("incident record not stored", zap.String("incident", e.IncidentID), zap.String("kind", string(e.Kind)),
		zap.Bool("permanent", permanent), zap.Error(err))
	r.alarm(e, err, permanent)
	if permanent {
		return fmt.Errorf("record event %s: %w", e.Kind, err)
	}
	// A store that is briefly unavailable may recover; Apply is
	// idempotent so the retry cannot duplicate the timeline.
	return fmt.Errorf("record event %s: %w", e.Kind, notify.Retryable(err, 0))
}

// permanentError: no retry can store it (a bad ID, a record over its
// bound or unreadable, a store that forbids the write).
func permanentError(err error) bool {
	return errors.Is(err, ErrInvalidID) || errors.Is(err, ErrInvalidRecord) || errors.Is(err, ErrTooLarge) ||
		errors.Is(err, statestore.ErrTooLarge) || errors.Is(err, ErrOutboxFull) ||
		apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err)
}

func (r *Recorder) alarm(e notify.Event, err error, permanent bool) {
	if r.opts.Alarm == nil {
		return
	}
	now := r.opts.Now()
	r.mu.Lock()
	since, ok := r.failing[e.IncidentID]
	if !ok {
		since = now
		r.failing[e.IncidentID] = now
	}
	last, alarmed := r.alarmed[e.IncidentID]
	due := (permanent || now.Sub(since) >= r.opts.AlarmAfter) && (!alarmed || now.Sub(last) >= time.Hour)
	if due {
		r.alarmed[e.IncidentID] = now
		for id, at := range r.alarmed {
			if now.Sub(at) > 24*time.Hour {
				delete(r.alarmed, id)
			}
		}
	}
	r.mu.Unlock()
	if !due {
		return
	}
	r.opts.Alarm(notify.Event{
		Kind: notify.KindRecordFailed, Time: now, Target: e.Target, Trigger: e.Trigger, IncidentID: e.IncidentID,
		Severity: notify.SeverityError, Security: e.Security,
		Summary: notify.Truncate(fmt.Sprintf("rollguard could not store the incident record %s (the rollback is not affected): %v", e.IncidentID, err), 1000),
		Details: notify.Details{Error: err.Error()},
	})
}
