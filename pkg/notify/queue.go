package notify

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/clock"
)

// Delivery results, the values of the result label.
const (
	ResultDelivered = "delivered"
	ResultRetried   = "retried"
	ResultFailed    = "failed"
	ResultDropped   = "dropped"
)

// Options tunes a Queue. Zero values take the defaults in brackets.
type Options struct {
	// Size is the buffer per notifier [256]. A full buffer drops: the
	// producer is a rollback in progress and must never wait on a pager.
	Size int
	// MaxAttempts per event and notifier, the first included [8].
	MaxAttempts int
	// BaseBackoff doubles after each retryable failure up to MaxBackoff
	// [1s, 1m]; the wait is jittered in [d/2, d). A peer's Retry-After
	// replaces it.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// Timeout bounds one attempt [10s].
	Timeout time.Duration
	// DrainTimeout bounds the delivery of what is still queued once Run's
	// context is cancelled [5s].
	DrainTimeout time.Duration
	// Now and Sleep are injectable for tests; Sleep returns ctx.Err() when
	// ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter maps a backoff to the actual wait [uniform in [d/2, d)].
	Jitter func(d time.Duration) time.Duration
	// Log, when set, records each event's final outcome per notifier.
	Log *DeliveryLog
	// Outbox, when set, keeps every event until each notifier is done
	// with it, so a crash loses no page: an event is stored before its
	// first attempt, and whoever leads next adopts what is pending
	// (Adopt). Nil: events live only in memory.
	Outbox Outbox
	// Owner is this process's identity in the Outbox.
	Owner string
	// OutboxTimeout bounds the wait for an Outbox write [5s]. A write
	// that fails or times out is logged and the event is delivered
	// anyway: a page never waits for its own bookkeeping.
	OutboxTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Size <= 0 {
		o.Size = 256
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.MaxBackoff < o.BaseBackoff {
		o.MaxBackoff = o.BaseBackoff
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Second
	}
	if o.OutboxTimeout <= 0 {
		o.OutboxTimeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = clock.Sleep
	}
	if o.Jitter == nil {
		o.Jitter = func(d time.Duration) time.Duration {
			half := d / 2
			if half <= 0 {
				return d
			}
			return half + rand.N(half)
		}
	}
}

// Queue delivers events to several notifiers, each from its own bounded
// buffer and goroutine, so a slow or failing peer never holds back another
// nor the producer. Delivery is at least once per notifier and in order:
// an event is retried before the next one is tried, which keeps a
// PagerDuty trigger ahead of its resolve.
type Queue struct {
	opts    Options
	logger  *zap.Logger
	workers []*worker
	// intake holds events on their way to the Outbox (nil without one).
	intake chan Event
	// stored is closed when the Outbox writer has handed its last event
	// to the workers at shutdown.
	stored chan struct{}

	total  *prometheus.CounterVec
	length *prometheus.GaugeVec
}

type worker struct {
	n  Notifier
	ch chan Event
	// once: claim each attempt in the Outbox first (AtMostOnce).
	once bool

	mu     sync.Mutex
	status NotifierStatus
}

// NotifierStatus is a notifier's delivery state for the status API. It
// holds no secret: LastError comes from the notifier, which scrubs it.
type NotifierStatus struct {
	Name          string    `json:"name"`
	QueueLength   int       `json:"queueLength"`
	Delivered     int64     `json:"delivered"`
	Failed        int64     `json:"failed"`
	Dropped       int64     `json:"dropped"`
	LastDelivery  time.Time `json:"lastDelivery,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
}

// NewQueue returns a queue for notifiers; call Run to start delivering.
// reg may be nil (no metrics registered).
func NewQueue(opts Options, notifiers []Notifier, logger *zap.Logger, reg prometheus.Registerer) *Queue {
	opts.defaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	q := &Queue{
		opts:   opts,
		logger: logger,
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifications_total",
			Help: "Notification delivery outcomes by notifier: delivered, retried (one per failed attempt that will be retried), failed (gave up), dropped (queue full or shut down).",
		}, []string{"notifier", "result"}),
		length: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notification_queue_length",
			Help: "Events waiting for delivery per notifier.",
		}, []string{"notifier"}),
	}
	if reg != nil {
		reg.MustRegister(q.total, q.length)
	}
	for _, n := range notifiers {
		name := n.Name()
		for _, r := range []string{ResultDelivered, ResultRetried, ResultFailed, ResultDropped} {
			q.total.WithLabelValues(name, r)
		}
		q.length.WithLabelValues(name).Set(0)
		q.workers = append(q.workers, &worker{
			n:      n,
			ch:     make(chan Event, opts.Size),
			once:   atMostOnce(n),
			status: NotifierStatus{Name: name},
		})
	}
	if opts.Outbox != nil {
		q.intake = make(chan Event, opts.Size)
	}
	q.stored = make(chan struct{})
	return q
}

// Enqueue hands e to every notifier without ever blocking. When a
// notifier's buffer is full the event is dropped for it, counted and
// logged.
func (q *Queue) Enqueue(e Event) {
	if e.Time.IsZero() {
		e.Time = q.opts.Now()
	}
	if e.ID == "" {
		e.ID = NewEventID()
	}
	if q.intake != nil {
		select {
		case q.intake <- e:
		default:
			for _, w := range q.workers {
				q.drop(w, e, "queue full")
			}
		}
		return
	}
	q.dispatch(e, false)
}

// dispatch hands e to every worker; marked says the Outbox holds it, so
// a drop must be recorded there too.
func (q *Queue) dispatch(e Event, marked bool) {
	for _, w := range q.workers {
		q.dispatchTo(w, e, marked)
	}
}

func (q *Queue) dispatchTo(w *worker, e Event, marked bool) {
	select {
	case w.ch <- e:
		q.length.WithLabelValues(w.n.Name()).Set(float64(len(w.ch)))
	default:
		q.drop(w, e, "queue full")
		if marked {
			q.opts.Outbox.Mark(e, w.n.Name(), StateDone)
		}
	}
}

func (q *Queue) drop(w *worker, e Event, why string) {
	name := w.n.Name()
	q.record(name, e, ResultDropped, 0, why)
	q.total.WithLabelValues(name, ResultDropped).Inc()
	w.mu.Lock()
	w.status.Dropped++
	w.mu.Unlock()
	q.logger.Error("notification dropped",
		zap.String("notifier", name),
		zap.String("reason", why),
		zap.String("kind", string(e.Kind)),
		zap.String("incident", e.IncidentID),
		zap.String("target", e.Target.String()))
}

// Status returns each notifier's delivery state.
func (q *Queue) Status() []NotifierStatus {
	out := make([]NotifierStatus, 0, len(q.workers))
	for _, w := range q.workers {
		w.mu.Lock()
		s := w.status
		w.mu.Unlock()
		s.QueueLength = len(w.ch)
		out = append(out, s)
	}
	return out
}

// Run delivers until ctx is cancelled, then spends at most DrainTimeout
// delivering what is still queued, drops the rest and returns.
func (q *Queue) Run(ctx context.Context) {
	// Deliveries run under dctx, which outlives ctx by DrainTimeout so an
	// in-flight event and the backlog get their chance at shutdown.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-dctx.Done():
			return
		}
		t := time.NewTimer(q.opts.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-dctx.Done():
		}
	}()

	var wg sync.WaitGroup
	if q.intake != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(q.stored)
			q.store(ctx, dctx)
		}()
	} else {
		close(q.stored)
	}
	for _, w := range q.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.work(ctx, dctx, w)
		}()
	}
	wg.Wait()
}

// store moves events from the intake into the Outbox, in batches, and on
// to the workers. At shutdown it stores what is left in the intake: the
// next leader delivers what this process cannot.
func (q *Queue) store(ctx, dctx context.Context) {
	for {
		select {
		case e := <-q.intake:
			q.storeBatch(dctx, e)
		case <-ctx.Done():
			for {
				select {
				case e := <-q.intake:
					q.storeBatch(dctx, e)
				default:
					return
				}
			}
		}
	}
}

func (q *Queue) storeBatch(dctx context.Context, first Event) {
	batch := []Event{first}
	for len(batch) < 64 {
		select {
		case e := <-q.intake:
			batch = append(batch, e)
			continue
		default:
		}
		break
	}
	entries := make([]Pending, 0, len(batch))
	now := q.opts.Now()
	for _, e := range batch {
		p := Pending{Event: e, Owner: q.opts.Owner, Notifiers: make(map[string]DeliveryState, len(q.workers)), Updated: now}
		for _, w := range q.workers {
			if t, ok := w.n.(Taker); ok && !t.Takes(e) {
				continue
			}
			p.Notifiers[w.n.Name()] = StatePending
		}
		if len(p.Notifiers) == 0 {
			continue
		}
		entries = append(entries, p)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(dctx), q.opts.OutboxTimeout)
	err := q.opts.Outbox.Add(entries)(ctx)
	cancel()
	if err != nil {
		q.logger.Warn("pending notifications not stored; delivering them without a durable copy",
			zap.Int("events", len(batch)), zap.String("incident", first.IncidentID), zap.Error(err))
	}
	for _, e := range batch {
		q.dispatch(e, true)
	}
}

// mark records a worker's progress on e in the Outbox, without waiting.
func (q *Queue) mark(w *worker, e Event, state DeliveryState) {
	if q.opts.Outbox != nil {
		q.opts.Outbox.Mark(e, w.n.Name(), state)
	}
}

// Adopt takes over the stored events other rollguards left pending (a
// new leader, or a leader sweeping up after `rollback --local`): those
// owned by another identity and untouched for at least minAge. An event a
// notifier was delivering at most once (StateClaimed) is not sent to it
// again. It returns how many events it queued.
func (q *Queue) Adopt(ctx context.Context, minAge time.Duration) (int, error) {
	if q.opts.Outbox == nil {
		return 0, nil
	}
	all, err := q.opts.Outbox.Pending(ctx)
	if err != nil {
		return 0, fmt.Errorf("adopt pending notifications: %w", err)
	}
	now := q.opts.Now()
	var mine []Pending
	for _, p := range all {
		if p.Owner != q.opts.Owner && now.Sub(p.Updated) >= minAge {
			mine = append(mine, p)
		}
	}
	if len(mine) == 0 {
		return 0, nil
	}
	if err := q.opts.Outbox.Own(mine, q.opts.Owner)(ctx); err != nil {
		return 0, fmt.Errorf("adopt pending notifications: %w", err)
	}
	byName := map[string]*worker{}
	for _, w := range q.workers {
		byName[w.n.Name()] = w
	}
	queued := 0
	for _, p := range mine {
		e := p.Event
		for name, st := range p.Notifiers {
			w := byName[name]
			switch {
			case w == nil:
				q.logger.Warn("pending notification for a notifier this rollguard does not have; dropped",
					zap.String("notifier", name), zap.String("kind", string(e.Kind)), zap.String("incident", e.IncidentID))
				q.opts.Outbox.Mark(e, name, StateDone)
			case st == StateClaimed:
				q.logger.Warn("notification not sent again: an attempt was in flight when its sender stopped, and this notifier delivers at most once",
					zap.String("notifier", name), zap.String("kind", string(e.Kind)), zap.String("incident", e.IncidentID), zap.String("owner", p.Owner))
				q.opts.Outbox.Mark(e, name, StateDone)
			case st == StatePending:
				q.dispatchTo(w, e, true)
				queued++
			}
		}
	}
	q.logger.Info("pending notifications adopted", zap.Int("events", len(mine)), zap.Int("deliveries", queued))
	return queued, nil
}

func (q *Queue) work(ctx, dctx context.Context, w *worker) {
	for {
		select {
		case e := <-w.ch:
			q.length.WithLabelValues(w.n.Name()).Set(float64(len(w.ch)))
			q.deliver(dctx, w, e)
		case <-ctx.Done():
			// What the Outbox writer still hands over is part of the drain.
			select {
			case <-q.stored:
			case <-dctx.Done():
			}
			for {
				select {
				case e := <-w.ch:
					q.length.WithLabelValues(w.n.Name()).Set(float64(len(w.ch)))
					q.deliver(dctx, w, e)
				default:
					return
				}
			}
		}
	}
}

// deliver tries e until it is delivered, fails permanently, runs out of
// attempts or dctx ends.
func (q *Queue) deliver(dctx context.Context, w *worker, e Event) {
	if dctx.Err() != nil {
		// The drain bound has passed: no attempt can finish. The Outbox
		// keeps it pending for the next leader.
		q.drop(w, e, "shutting down")
		return
	}
	name := w.n.Name()
	backoff := q.opts.BaseBackoff
	for attempt := 1; ; attempt++ {
		if w.once && q.opts.Outbox != nil {
			// Durable before the attempt: after a crash mid-attempt the
			// next leader must not post it again.
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(dctx), q.opts.OutboxTimeout)
			if err := q.opts.Outbox.Mark(e, name, StateClaimed)(cctx); err != nil {
				q.logger.Warn("delivery attempt not claimed in the outbox; a crash during it may repeat it",
					zap.String("notifier", name), zap.String("kind", string(e.Kind)), zap.String("incident", e.IncidentID), zap.Error(err))
			}
			ccancel()
		}
		actx, cancel := context.WithTimeout(dctx, q.opts.Timeout)
		actx, sent := withSentFlag(actx)
		err := w.n.Notify(actx, e)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded)
		cancel()
		if err == nil {
			if sent.Load() {
				q.record(name, e, ResultDelivered, attempt, "")
			}
			q.mark(w, e, StateDone)
			q.total.WithLabelValues(name, ResultDelivered).Inc()
			w.mu.Lock()
			w.status.Delivered++
			w.status.LastDelivery = q.opts.Now()
			w.mu.Unlock()
			q.logger.Debug("notification delivered",
				zap.String("notifier", name), zap.String("kind", string(e.Kind)),
				zap.String("incident", e.IncidentID), zap.Int("attempt", attempt))
			return
		}
		// An attempt that hit its own deadline is a timeout whatever the
		// notifier made of it; a cancelled dctx is shutdown, not the peer.
		retryable := IsRetryable(err) || (timedOut && dctx.Err() == nil)
		giveUp := ""
		switch {
		case dctx.Err() != nil:
			giveUp = "shutting down"
		case !retryable:
			giveUp = "permanent error"
		case attempt >= q.opts.MaxAttempts:
			giveUp = "attempts exhausted"
		}
		if giveUp != "" {
			if dctx.Err() == nil {
				// Given up for good. At shutdown it stays pending (or
				// claimed) in the Outbox for the next leader.
				q.mark(w, e, StateDone)
			}
			q.fail(w, e, err, attempt, giveUp)
			return
		}
		if w.once {
			// This attempt is over and failed: the next leader may try.
			q.mark(w, e, StatePending)
		}
		wait := q.opts.Jitter(backoff)
		if after, ok := RetryAfter(err); ok {
			wait = after
		}
		backoff = min(backoff*2, q.opts.MaxBackoff)
		q.total.WithLabelValues(name, ResultRetried).Inc()
		q.logger.Warn("notification failed, retrying",
			zap.String("notifier", name), zap.String("kind", string(e.Kind)),
			zap.String("incident", e.IncidentID), zap.Int("attempt", attempt),
			zap.Duration("wait", wait), zap.Error(err))
		if serr := q.opts.Sleep(dctx, wait); serr != nil {
			q.fail(w, e, err, attempt, "shutting down")
			return
		}
	}
}

func (q *Queue) fail(w *worker, e Event, err error, attempts int, why string) {
	name := w.n.Name()
	q.record(name, e, ResultFailed, attempts, err.Error())
	q.total.WithLabelValues(name, ResultFailed).Inc()
	w.mu.Lock()
	w.status.Failed++
	w.status.LastError = err.Error()
	w.status.LastErrorTime = q.opts.Now()
	w.mu.Unlock()
	q.logger.Error("notification gave up",
		zap.String("notifier", name), zap.String("kind", string(e.Kind)),
		zap.String("incident", e.IncidentID), zap.String("target", e.Target.String()),
		zap.Int("attempts", attempts), zap.String("reason", why), zap.Error(err))
}

func (q *Queue) record(notifier string, e Event, result string, attempts int, errText string) {
	q.opts.Log.add(Delivery{Time: q.opts.Now(), Notifier: notifier, Kind: e.Kind, IncidentID: e.IncidentID,
		Summary: e.Summary, Result: result, Attempts: attempts, Error: errText})
}
