// Package leader runs rollguard's leader election on a Lease, so that of
// two replicas exactly one acts while both keep evaluating.
//
// The lease is not a fence (client-go says so): a leader that stalls past
// its lease may still be running a step when another replica takes over.
// Every Deployment write is therefore fenced separately with a
// resourceVersion precondition, and plans resume from the journal; this
// package only decides who should start work, and makes sure the work
// stops before the lease is given up.
package leader

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
)

// ErrLost is returned by Run when the lease was lost while ctx was still
// live: the process should exit, as Flagger does, rather than keep running
// with state it can no longer trust.
var ErrLost = errors.New("leader lease lost")

// Options configure the election. Zero durations take client-go's
// defaults for core components (15 s / 10 s / 2 s).
type Options struct {
	Namespace     string
	Name          string
	Identity      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// Address is the base URL others reach this replica's API at; the
	// leader publishes it on the Lease (Lookup), so a follower can hand
	// requests to it. Empty: none published (Advertise sets it later).
	Address string
}

// Elector holds the election's state.
type Elector struct {
	client kubernetes.Interface
	opts   Options
	log    *zap.Logger
	leader atomic.Bool
	gauge  prometheus.Gauge
	lock   *addressLock
}

// New validates opts and returns an Elector. The rollguard_leader gauge is
// registered on reg.
func New(client kubernetes.Interface, opts Options, logger *zap.Logger, reg prometheus.Registerer) (*Elector, error) {
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = 10 * time.Second
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = 2 * time.Second
	}
	if opts.Namespace == "" || opts.Name == "" || opts.Identity == "" {
		return nil, fmt.Errorf("leader election: namespace, name and identity are required")
	}
	if !(opts.LeaseDuration > opts.RenewDeadline && float64(opts.RenewDeadline) > 1.2*float64(opts.RetryPeriod)) {
		return nil, fmt.Errorf("leader election: need leaseDuration > renewDeadline > 1.2 × retryPeriod, got %s, %s, %s",
			opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod)
	}
	e := &Elector{client: client, opts: opts, log: logger,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "leader", Help: "1 when this replica holds the leader lease."}),
		lock: &addressLock{meta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Name}, client: client.CoordinationV1(),
			id: opts.Identity, address: opts.Address}}
	if reg != nil {
		reg.MustRegister(e.gauge)
	}
	return e, nil
}

// Advertise sets the address this replica publishes while it leads (the
// listener's, known only once it listens). Call it before Run.
func (e *Elector) Advertise(address string) { e.lock.setAddress(address) }

// Lookup returns the replica holding the lease and its address.
func (e *Elector) Lookup(ctx context.Context) (Holder, error) {
	return Lookup(ctx, e.client.CoordinationV1(), e.opts.Namespace, e.opts.Name, time.Now())
}

// Identity is this replica's name in the election.
func (e *Elector) Identity() string { return e.opts.Identity }

// IsLeader reports whether this replica currently holds the lease.
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Run campaigns until ctx is done or the lease is lost. While leading it
// runs lead with a context that is cancelled when leadership ends; Run
// waits for lead to return before the lease is released (on ctx done) or
// before returning ErrLost (on loss), so no protected work outlives the
// lease this replica knows about.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	lock := e.lock
	// The elector gets its own context so that on shutdown the protected
	// work stops first and only then is the lease released.
	electCtx, cancelElect := context.WithCancel(context.Background())
	defer cancelElect()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		stopWork context.CancelFunc = func() {}
	)
	stop := func() {
		mu.Lock()
		stopWork()
		mu.Unlock()
		wg.Wait()
		e.leader.Store(false)
		e.gauge.Set(0)
	}

	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   e.opts.LeaseDuration,
		RenewDeadline:   e.opts.RenewDeadline,
		RetryPeriod:     e.opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				workCtx, cancel := context.WithCancel(lctx)
				mu.Lock()
				stopWork = cancel
				mu.Unlock()
				e.leader.Store(true)
				e.gauge.Set(1)
				e.log.Info("became leader", zap.String("identity", e.opts.Identity), zap.String("lease", e.opts.Namespace+"/"+e.opts.Name))
				wg.Add(1)
				go func() {
					defer wg.Done()
					lead(workCtx)
				}()
			},
			OnStoppedLeading: func() {
				stop()
				e.log.Info("stopped leading", zap.String("identity", e.opts.Identity))
			},
			OnNewLeader: func(id string) {
				if id != e.opts.Identity {
					e.log.Info("leader is another replica", zap.String("leader", id))
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election %s/%s: %w", e.opts.Namespace, e.opts.Name, err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		le.Run(electCtx) // returns when electCtx ends or the lease is lost
	}()
	select {
	case <-ctx.Done():
		stop() // stop the work, then release the lease
		cancelElect()
		<-done
		return ctx.Err()
	case <-done:
		stop()
		return ErrLost
	}
}
