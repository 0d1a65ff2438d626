package app

import (
	"fmt"
	"time"

	commoncfg "github.com/prometheus/common/config"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/notify"
	amnotify "github.com/rollguard/rollguard/pkg/notify/alertmanager"
	"github.com/rollguard/rollguard/pkg/notify/webhook"
)

// buildHTTPNotifiers makes the generic webhooks and the Alertmanager
// notifier the config asks for, each filtered by the targets' opt-outs.
// Their HTTP clients come from prometheus/common, like the Prometheus
// source's: credential files are read on every request.
func buildHTTPNotifiers(cfg *config.Config, wants func(func(*config.TargetNotify) *bool) func(notify.Event) bool) ([]notify.Notifier, error) {
	n := cfg.Global.Notify
	var out []notify.Notifier
	for i, w := range n.Webhooks {
		client, err := commoncfg.NewClientFromConfig(w.HTTPConfig, "rollguard-webhook-"+w.Name, commoncfg.WithUserAgent("rollguard"))
		if err != nil {
			return nil, fmt.Errorf("global.notify.webhooks[%d].httpConfig: %w", i, err)
		}
		client.Timeout = time.Duration(w.Timeout)
		u := w.URL
		if u == "" {
			u = string(w.URLSecret)
		}
		kinds := make([]notify.Kind, len(w.Kinds))
		for j, k := range w.Kinds {
			kinds[j] = notify.Kind(k)
		}
		wh, err := webhook.New(webhook.Options{Name: w.Name, URL: u, Client: client, Kinds: kinds})
		if err != nil {
			return nil, fmt.Errorf("global.notify.webhooks[%d]: %w", i, err)
		}
		out = append(out, notify.Filter(wh, wants(func(t *config.TargetNotify) *bool { return t.Webhooks })))
	}
	if a := n.Alertmanager; a != nil {
		client, err := commoncfg.NewClientFromConfig(a.HTTPConfig, "rollguard-alertmanager", commoncfg.WithUserAgent("rollguard"))
		if err != nil {
			return nil, fmt.Errorf("global.notify.alertmanager.httpConfig: %w", err)
		}
		client.Timeout = time.Duration(a.Timeout)
		am, err := amnotify.New(amnotify.Options{URLs: a.URLs, Client: client, Labels: a.Labels,
			ActiveFor: time.Duration(a.ActiveFor), StatusURL: n.StatusURL})
		if err != nil {
			return nil, fmt.Errorf("global.notify.alertmanager: %w", err)
		}
		out = append(out, notify.Filter(am, wants(func(t *config.TargetNotify) *bool { return t.Alertmanager })))
	}
	return out, nil
}
