package app

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollguard/rollguard/pkg/config"
)

// Results of a reload, the result label of rollguard_config_reloads_total.
const (
	reloadApplied         = "applied"
	reloadRestartRequired = "restart_required"
	reloadInvalid         = "invalid"
)

// reloadMetrics say how reloads end: applied (rotated secrets that a
// reload can put in use included), refused because only a restart applies
// what changed (a rotated DSN or notifier secret among them), or invalid.
type reloadMetrics struct {
	total           *prometheus.CounterVec
	restartRequired prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "config_reloads_total",
			Help: "Config reloads by result: applied, restart_required (the file changes what only a restart applies, e.g. a rotated DSN or routing key) or invalid."}, []string{"result"}),
		restartRequired: prometheus.NewGauge(prometheus.GaugeOpts{Name: "config_restart_required",
			Help: "1 while the config file (or a secret file) holds a change only a restart puts in use; the running config is the old one."}),
	}
	for _, r := range []string{reloadApplied, reloadRestartRequired, reloadInvalid} {
		m.total.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.total, m.restartRequired)
	}
	return m
}

func (m *reloadMetrics) record(result string) {
	m.total.WithLabelValues(result).Inc()
	switch result {
	case reloadApplied:
		m.restartRequired.Set(0)
	case reloadRestartRequired:
		m.restartRequired.Set(1)
	}
}

// restartRequiredError refuses a reload that changes what is built once at
// start; it names the rotated secrets among the changes, so the operator
// who rotated one knows the reload did not put it in use.
type restartRequiredError struct {
	changed, rotated []string
}

func (e *restartRequiredError) Error() string {
	msg := fmt.Sprintf("%v changed: these settings take effect only on restart", e.changed)
	if len(e.rotated) > 0 {
		msg += fmt.Sprintf(" (rotated secrets %v are still the old ones until then)", e.rotated)
	}
	return msg
}

// tokenSecret is the one secret a reload puts in use: the API reads its
// token on every request.
const tokenSecret = "global.api.tokenFile"

// rotatedSecrets lists the secrets whose value differs between the running
// config and the next one, by path; a secret added or removed is a change
// of its own field, not a rotation.
func rotatedSecrets(cur, next *config.Config) []string {
	if cur == nil || next == nil {
		return nil
	}
	old := map[string]config.Secret{}
	for _, s := range cur.Secrets() {
		old[s.Path] = s.Value
	}
	var out []string
	for _, s := range next.Secrets() {
		if v, ok := old[s.Path]; ok && v != s.Value {
			out = append(out, s.Path)
		}
	}
	return out
}

// restartOnlySecrets drops the secrets a reload does put in use.
func restartOnlySecrets(rotated []string) []string {
	return slices.DeleteFunc(slices.Clone(rotated), func(p string) bool { return p == tokenSecret })
}

// watchedHash is a hash of the config file and every secret file it
// names: a Kubernetes Secret rotated under a mounted file reloads the
// config like an edit of the file does.
func (d *daemon) watchedHash() (string, error) {
	h := sha256.New()
	b, err := os.ReadFile(d.opts.ConfigFile)
	if err != nil {
		return "", err
	}
	h.Write(b)
	if cfg := d.config(); cfg != nil {
		for _, s := range cfg.Secrets() {
			if s.File == "" {
				continue
			}
			// A secret file that cannot be read changes the hash too:
			// the reload then says why.
			sb, err := os.ReadFile(s.File)
			h.Write([]byte("\x00" + s.File + "\x00"))
			if err != nil {
				h.Write([]byte(strings.ToLower(err.Error())))
			}
			h.Write(sb)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
