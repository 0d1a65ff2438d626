package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/leader"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/statestore"
)

// AlertLogName is the ConfigMap of the Alertmanager alerts taken up.
const AlertLogName = "rollguard-alerts"

// records are where incident records, pending notifications and the
// alerts taken up are kept (global.notify.incidentStore).
type records struct {
	reader   incident.Reader
	recorder *incident.Recorder
	// cluster is set for the cluster store: the queue's Outbox, and the
	// retention a leader applies.
	cluster *incident.ClusterStore
	alerts  response.AlertLog
	// alarm is where the recorder's "record not stored" events go: the
	// queue, set once it exists.
	alarm func(notify.Event)
}

// IncidentNamespace is where the cluster store keeps its objects:
// incidentStore.namespace, else the leader election's namespace.
func IncidentNamespace(cfg *config.Config) string {
	if ns := cfg.Global.Notify.IncidentStore.Namespace; ns != "" {
		return ns
	}
	return cfg.Global.LeaderElection.Namespace
}

// ClusterRecords returns the cluster store of cfg, for reading records
// without a daemon (`rollguard incidents --from-cluster`).
func ClusterRecords(cfg *config.Config, client kubernetes.Interface, logger *zap.Logger) *incident.ClusterStore {
	is := cfg.Global.Notify.IncidentStore
	return incident.NewClusterStore(statestore.New(client.CoreV1(), IncidentNamespace(cfg)), incident.ClusterOptions{
		Template: incident.Template{StatusURL: cfg.Global.Notify.StatusURL}, MaxRecords: is.MaxRecords, MaxAge: time.Duration(is.MaxAge),
	}, logger)
}

func buildRecords(cfg *config.Config, client kubernetes.Interface, logger *zap.Logger) (*records, error) {
	n := cfg.Global.Notify
	rec := &records{}
	alarm := func(e notify.Event) {
		if rec.alarm != nil {
			rec.alarm(e)
		}
	}
	var w incident.Writer
	switch n.IncidentStore.Kind {
	case config.IncidentStoreDir:
		store, err := incident.NewStore(n.IncidentDir, incident.Template{StatusURL: n.StatusURL})
		if err != nil {
			return nil, fmt.Errorf("incident store %s (global.notify.incidentDir): %w", n.IncidentDir, err)
		}
		w, rec.reader = store, store.Reader()
	default:
		store := ClusterRecords(cfg, client, logger.Named("incident"))
		w, rec.reader, rec.cluster = store, store, store
		rec.alerts = statestore.NewDoc[map[string]response.AlertEntry](statestore.New(client.CoreV1(), IncidentNamespace(cfg)),
			AlertLogName, map[string]string{incident.LabelState: "alerts"})
	}
	rec.recorder = incident.NewRecorderWith(w, incident.RecorderOptions{Alarm: alarm}, logger.Named("incident"))
	return rec, nil
}

// handler serves the incident API from the store.
func (r *records) handler(logger *zap.Logger) http.Handler { return incident.Handler(r.reader, logger) }

// outbox is the queue's Outbox (nil for the directory store).
func (r *records) outbox() notify.Outbox {
	if r.cluster == nil {
		return nil
	}
	return r.cluster
}

// Sweep timing of a leader: what other rollguards left pending (a
// `rollback --local`, a leader that lost its lease without noticing) is
// adopted once untouched for adoptAfter; retention runs every prune.
const (
	sweepEvery = time.Minute
	adoptAfter = 2 * time.Minute
	pruneEvery = 10 * time.Minute
)

// term is one leadership term of the daemon around the responder's: it
// first adopts the notifications a previous leader left pending, then
// sweeps and prunes while it lasts.
func (d *daemon) term(ctx context.Context) {
	// The adoption runs beside the responder's term: a request must not
	// wait on it to be taken.
	done := make(chan struct{})
	go func() {
		defer close(done)
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if n, err := d.queue.Adopt(actx, 0); err != nil {
			d.log.Warn("pending notifications not adopted", zap.Error(err))
		} else if n > 0 {
			d.log.Info("delivering the notifications a previous leader left pending", zap.Int("deliveries", n))
		}
		cancel()
		d.sweep(ctx)
	}()
	d.resp.Lead(ctx)
	<-done
}

func (d *daemon) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	lastPrune := time.Time{}
	for {
		if d.records.cluster != nil && time.Since(lastPrune) >= pruneEvery {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if n, err := d.records.cluster.Prune(pctx); err != nil {
				d.log.Warn("incident retention not applied", zap.Error(err))
			} else if n > 0 {
				d.log.Info("incident records past their retention deleted", zap.Int("deleted", n))
			}
			cancel()
			lastPrune = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if _, err := d.queue.Adopt(actx, adoptAfter); err != nil {
			d.log.Warn("pending notifications not adopted", zap.Error(err))
		}
		cancel()
	}
}

// leadership is the API's view of who leads.
type leadership struct{ d *daemon }

func (l leadership) Leading() bool    { return l.d.resp.Leading() }
func (l leadership) Identity() string { return l.d.opts.Identity }
func (l leadership) Leader(ctx context.Context) (string, error) {
	le := l.d.config().Global.LeaderElection
	h, err := leader.Lookup(ctx, l.d.leases, le.Namespace, le.LeaseName, time.Now())
	if err != nil {
		return "", err
	}
	if h.Identity == l.d.opts.Identity {
		// This replica holds the lease but its term has not begun (or
		// just ended): the request must come back.
		return "", fmt.Errorf("%s holds the lease but is not acting yet", h.Identity)
	}
	return h.Address, nil
}

// advertiseURL is the base URL other replicas reach this one's API at:
// $ROLLGUARD_ADVERTISE_URL, else http://$POD_IP:port, else the listener's
// own address when it is a specific IP. Empty when none is known (the
// followers then answer 503 instead of handing requests over).
func advertiseURL(ln net.Addr) string {
	if u := os.Getenv("ROLLGUARD_ADVERTISE_URL"); u != "" {
		return u
	}
	tcp, ok := ln.(*net.TCPAddr)
	if !ok {
		return ""
	}
	host := os.Getenv("POD_IP")
	if host == "" {
		if tcp.IP == nil || tcp.IP.IsUnspecified() {
			return ""
		}
		host = tcp.IP.String()
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

// caller is who runs `rollback --local`: $USER on this host.
func caller() string {
	u := os.Getenv("USER")
	h, _ := os.Hostname()
	switch {
	case u != "" && h != "":
		return u + "@" + h
	case u != "":
		return u
	}
	return h
}

// IncidentReader reads the incident records of the config file without a
// daemon: the cluster's ConfigMaps (or the directory, for the dir store).
func IncidentReader(opts Options) (incident.Reader, error) {
	opts.defaults()
	// No secret is needed to read records: a workstation without the
	// daemon's secret files can read them.
	cfg, err := config.LoadFile(opts.ConfigFile)
	if err != nil {
		return nil, err
	}
	if cfg.Global.Notify.IncidentStore.Kind == config.IncidentStoreDir {
		s, err := incident.NewStore(cfg.Global.Notify.IncidentDir, incident.Template{StatusURL: cfg.Global.Notify.StatusURL})
		if err != nil {
			return nil, fmt.Errorf("incident store %s (global.notify.incidentDir): %w", cfg.Global.Notify.IncidentDir, err)
		}
		return s.Reader(), nil
	}
	client, _, err := kubeClient(cfg, opts)
	if err != nil {
		return nil, err
	}
	return ClusterRecords(cfg, client, zap.NewNop()), nil
}
