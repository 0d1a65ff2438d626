package incident

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Recorder is the notify.Notifier that writes the incident record: it sits
// in the delivery Queue beside PagerDuty and Slack, so it sees the same
// events in the same order, and a slow disk never delays the rollback.
// Each event is applied to the stored record (read back from the Store, so
// a restarted rollguard continues the same record).
type Recorder struct {
	store  *Store
	logger *zap.Logger
	mu     sync.Mutex
}

// NewRecorder returns a Recorder writing to store.
func NewRecorder(store *Store, logger *zap.Logger) *Recorder {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Recorder{store: store, logger: logger}
}

// Name implements notify.Notifier.
func (r *Recorder) Name() string { return "incident" }

// Notify implements notify.Notifier. Events without an incident (tests,
// blindness of a target with no incident) are not recorded.
func (r *Recorder) Notify(_ context.Context, e notify.Event) error {
	if e.IncidentID == "" || e.Kind == notify.KindTest {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, err := r.store.Get(e.IncidentID)
	switch {
	case errors.Is(err, ErrNotFound):
		rec = &Record{}
	case errors.Is(err, ErrInvalidID):
		return fmt.Errorf("record event %s: %w", e.Kind, err)
	case err != nil:
		return fmt.Errorf("record event %s: %w", e.Kind, notify.Retryable(err, 0))
	}
	Apply(rec, e)
	if err := r.store.Put(rec); err != nil {
		if errors.Is(err, ErrInvalidID) {
			return fmt.Errorf("record event %s: %w", e.Kind, err)
		}
		// A full or briefly unwritable disk may recover; Apply is
		// idempotent so the retry cannot duplicate the timeline.
		return fmt.Errorf("record event %s: %w", e.Kind, notify.Retryable(err, 0))
	}
	if e.Kind == notify.KindDetected || e.Kind == notify.KindRollbackSucceeded || e.Kind == notify.KindRollbackFailed {
		r.logger.Info("incident record updated", zap.String("incident", rec.ID),
			zap.String("status", string(rec.Status)), zap.String("kind", string(e.Kind)))
	}
	return nil
}
