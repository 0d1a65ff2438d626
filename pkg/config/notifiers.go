package config

import (
	"net/url"
	"slices"
)

// EventKinds are the kinds of notification events a webhook may select,
// as pkg/notify names them (a test there holds the two lists together).
var EventKinds = []string{
	"detected", "rollback_started", "step_started", "step_finished", "rollback_succeeded",
	"rollback_failed", "rollback_unverified", "cannot_rollback", "would_rollback", "blind", "blind_resolved", "test", "record_failed",
}

// AlertmanagerReservedLabels are the labels rollguard sets on every alert
// it pushes to Alertmanager; global.notify.alertmanager.labels must not
// use them.
var AlertmanagerReservedLabels = []string{"alertname", "cluster", "namespace", "deployment", "trigger", "severity", "rollguard_incident", "security"}

// validateNotifiers checks the generic webhooks and Alertmanager, and the
// targets' opt-ins to them.
func (c *Config) validateNotifiers(errs *errList, given func(string) bool) {
	n := &c.Global.Notify
	names := map[string]int{}
	for i := range n.Webhooks {
		w := &n.Webhooks[i]
		p := indexPath("global.notify.webhooks", i)
		dnsLabel(errs, p+".name", w.Name)
		if j, dup := names[w.Name]; dup && w.Name != "" {
			errs.addf(p+".name", "duplicate webhook name %q (also global.notify.webhooks[%d])", w.Name, j)
		} else {
			names[w.Name] = i
		}
		switch {
		case w.URL == "" && w.URLFile == "":
			errs.addf(p, "one of url and urlFile is required")
		case w.URL != "" && w.URLFile != "":
			errs.addf(p, "only one of url and urlFile is allowed")
		case w.URL != "":
			httpURL(errs, p+".url", w.URL)
		}
		for j, k := range w.Kinds {
			oneOf(errs, indexPath(p+".kinds", j), k, EventKinds)
		}
		positive(errs, p+".timeout", w.Timeout)
		validateHTTPConfig(errs, p+".httpConfig", &w.HTTPConfig, given)
	}
	if a := n.Alertmanager; a != nil {
		const p = "global.notify.alertmanager"
		if len(a.URLs) == 0 {
			errs.addf(p+".urls", "at least one Alertmanager URL is required")
		}
		for j, u := range a.URLs {
			httpURL(errs, indexPath(p+".urls", j), u)
		}
		labelNames(errs, p+".labels", a.Labels)
		for _, k := range sortedKeys(a.Labels) {
			switch {
			case slices.Contains(AlertmanagerReservedLabels, k):
				errs.addf(keyPath(p+".labels", k), "set by rollguard on every alert; choose another name")
			case a.Labels[k] == "":
				errs.addf(keyPath(p+".labels", k), "must not be empty (Alertmanager drops empty labels)")
			}
		}
		positive(errs, p+".activeFor", a.ActiveFor)
		positive(errs, p+".timeout", a.Timeout)
		validateHTTPConfig(errs, p+".httpConfig", &a.HTTPConfig, given)
	}
	for i, t := range c.Targets {
		np := indexPath("targets", i) + ".notify"
		if t.Notify.Webhooks != nil && *t.Notify.Webhooks && len(n.Webhooks) == 0 {
			errs.addf(np+".webhooks", "requires global.notify.webhooks")
		}
		if t.Notify.Alertmanager != nil && *t.Notify.Alertmanager && n.Alertmanager == nil {
			errs.addf(np+".alertmanager", "requires global.notify.alertmanager")
		}
	}
}

// resolveNotifiers reads the webhooks' URL files and checks the files of
// every notifier's HTTP client settings.
func (r *secretReader) resolveNotifiers(n *Notify) {
	for i := range n.Webhooks {
		w := &n.Webhooks[i]
		p := indexPath("global.notify.webhooks", i)
		if w.URLFile != "" {
			if s, ok := r.file(p+".urlFile", w.URLFile); ok {
				u, err := url.Parse(string(s))
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					r.errs.addf(p+".urlFile", "file %q does not hold an http or https URL (content withheld)", r.abs(w.URLFile))
				} else {
					w.URLSecret = s
				}
			}
		}
		r.resolveHTTPConfig(p+".httpConfig", &w.HTTPConfig)
	}
	if a := n.Alertmanager; a != nil {
		r.resolveHTTPConfig("global.notify.alertmanager.httpConfig", &a.HTTPConfig)
	}
}

// setDirectory makes the relative files of every HTTP client setting
// relative to the config file's directory, as Prometheus does.
func (c *Config) setDirectory(dir string) {
	c.Global.Prometheus.HTTPConfig.SetDirectory(dir)
	for i := range c.Global.Notify.Webhooks {
		c.Global.Notify.Webhooks[i].HTTPConfig.SetDirectory(dir)
	}
	if a := c.Global.Notify.Alertmanager; a != nil {
		a.HTTPConfig.SetDirectory(dir)
	}
}
