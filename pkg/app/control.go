package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/pkg/notify/slack"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/version"
)

// buildNotifiers makes the PagerDuty, Slack and incident-record notifiers
// the config asks for, each filtered by the targets' opt-outs.
func buildNotifiers(cfg *config.Config, logger *zap.Logger) ([]notify.Notifier, http.Handler, error) {
	n := cfg.Global.Notify
	tmpl := incident.Template{StatusURL: n.StatusURL}
	var out []notify.Notifier
	wants := func(pick func(*config.TargetNotify) *bool) func(notify.Event) bool {
		opt := map[string]bool{}
		for _, t := range cfg.Targets {
			p := pick(&t.Notify)
			opt[t.Namespace+"/"+t.Deployment] = p == nil || *p
		}
		return func(e notify.Event) bool {
			on, ok := opt[e.Target.String()]
			return !ok || on
		}
	}
	if key := string(n.PagerDuty.RoutingKey); key != "" {
		pd, err := pagerduty.New(pagerduty.Options{
			Endpoint: n.PagerDuty.Endpoint, RoutingKey: key, SecurityRoutingKey: string(n.PagerDuty.SecurityRoutingKey),
			StatusURL: n.StatusURL, ResolveOnSuccess: n.PagerDuty.ResolveOnRecovery, Timeout: time.Duration(n.PagerDuty.Timeout),
		}, logger.Named("pagerduty"))
		if err != nil {
			return nil, nil, fmt.Errorf("pagerduty: %w", err)
		}
		out = append(out, notify.Filter(pd, wants(func(t *config.TargetNotify) *bool { return t.PagerDuty })))
	}
	if u := string(n.Slack.WebhookURL); u != "" {
		sl, err := slack.New(slack.Options{WebhookURL: u, Channel: n.Slack.Channel, Template: tmpl, Timeout: time.Duration(n.Slack.Timeout)}, logger.Named("slack"))
		if err != nil {
			return nil, nil, fmt.Errorf("slack: %w", err)
		}
		out = append(out, notify.Filter(sl, wants(func(t *config.TargetNotify) *bool { return t.Slack })))
	}
	more, err := buildHTTPNotifiers(cfg, wants)
	if err != nil {
		return nil, nil, err
	}
	out = append(out, more...)
	var handler http.Handler
	if n.IncidentDir != "" {
		store, err := incident.NewStore(n.IncidentDir, tmpl)
		if err != nil {
			return nil, nil, fmt.Errorf("incident store %s (global.notify.incidentDir): %w", n.IncidentDir, err)
		}
		out = append(out, incident.NewRecorder(store, logger.Named("incident")))
		handler = store.Handler()
	}
	return out, handler, nil
}

// controller is the API's view of the daemon.
type controller struct{ d *daemon }

func (c *controller) Status() api.Status {
	cfg := c.d.config()
	c.d.mu.RLock()
	hash, loaded := c.d.cfgHash, c.d.loadedAt
	c.d.mu.RUnlock()
	s := api.Status{Version: version.Get().Version, Leader: c.d.isLeader(), DryRun: cfg.Global.DryRun,
		ConfigHash: hash, LoadedAt: loaded, Triggers: c.d.eval.Status()}
	byName := map[string]response.TargetStatus{}
	for _, t := range c.d.resp.Status() {
		byName[t.Name] = t
	}
	for _, t := range cfg.Targets {
		rs := byName[t.Name]
		ts := api.TargetStatus{Name: t.Name, Namespace: t.Namespace, Deployment: t.Deployment,
			DryRun: rs.DryRun, Frozen: t.Freeze || cfg.Global.Interlocks.Freeze, Running: rs.Running, LastResult: rs.LastResult}
		if g, ok := c.d.watch.Status(t.Name); ok && (g.Owner != "" || g.Error != "") {
			ts.GitOps = &g
		}
		s.Targets = append(s.Targets, ts)
	}
	return s
}

func (c *controller) Ready() (bool, string) { return c.d.eval.Ready() }

func (c *controller) Rollback(ctx context.Context, req api.ActionRequest) (api.ActionResult, error) {
	detail, err := c.d.resp.Request(ctx, req.Target, normalizeAction(req.Action), req.Reason, false)
	return c.result(req.Target, req.Action, detail, err)
}

func (c *controller) result(target, action, detail string, err error) (api.ActionResult, error) {
	switch {
	case errors.Is(err, response.ErrUnknownTarget):
		return api.ActionResult{}, fmt.Errorf("%w: %q", api.ErrUnknownTarget, target)
	case errors.Is(err, response.ErrUnknownAction):
		return api.ActionResult{}, fmt.Errorf("%w: action %q", api.ErrRefused, action)
	case errors.Is(err, response.ErrRefusedByInterlock):
		return api.ActionResult{}, fmt.Errorf("%w: %s", api.ErrRefused, detail)
	case err != nil:
		return api.ActionResult{}, err
	}
	return api.ActionResult{Target: target, Action: action, Accepted: true, Detail: detail}, nil
}

// normalizeAction accepts the CLI's short plan names.
func normalizeAction(a string) string {
	if a == "full" {
		return response.ActionFullRollback
	}
	return a
}

func (c *controller) SetFreeze(ctx context.Context, target string, frozen bool, reason string) error {
	t, ok := c.d.target(target)
	if !ok {
		return fmt.Errorf("%w: %q", api.ErrUnknownTarget, target)
	}
	var val any // nil removes the annotation
	if frozen {
		val = reason
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{kube.FreezeAnnotation: val}}})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.d.client.AppsV1().Deployments(t.Namespace).Patch(ctx, t.Deployment, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate deployment %s/%s: %w", t.Namespace, t.Deployment, err)
	}
	c.d.log.Info("freeze changed", zap.String("target", target), zap.Bool("frozen", frozen), zap.String("reason", reason))
	return nil
}

func (c *controller) Alerts(ctx context.Context, reqs []alertmanager.Request) ([]api.ActionResult, error) {
	out := make([]api.ActionResult, 0, len(reqs))
	for _, r := range reqs {
		detail, err := c.d.resp.Request(ctx, r.Target, r.Action, r.Reason, r.Security)
		res, err := c.result(r.Target, r.Action, detail, err)
		if err != nil {
			res = api.ActionResult{Target: r.Target, Action: r.Action, Detail: err.Error()}
		}
		out = append(out, res)
	}
	return out, nil
}

func (c *controller) Reload(ctx context.Context) error { return c.d.reload(ctx) }

// ResumeGitOps lifts rollguard's suspension of a target's GitOps owner.
func (c *controller) ResumeGitOps(ctx context.Context, target, reason string) (string, error) {
	if !c.d.isLeader() {
		return "", fmt.Errorf("%w: not the leader: ask the replica holding the lease", api.ErrRefused)
	}
	detail, err := c.d.watch.Resume(ctx, target, reason)
	switch {
	case errors.Is(err, gitops.ErrUnknownTarget):
		return "", fmt.Errorf("%w: %q", api.ErrUnknownTarget, target)
	case errors.Is(err, gitops.ErrNotMarked):
		return "", fmt.Errorf("%w: %v", api.ErrRefused, err)
	case err != nil:
		return "", err
	}
	c.d.log.Info("gitops suspension lifted by a human", zap.String("target", target), zap.String("reason", reason))
	return detail, nil
}

func (c *controller) AlertOptions() alertmanager.Options {
	cfg := c.d.config()
	o := alertmanager.Options{Targets: map[string]bool{}, DefaultAction: response.ActionRollback,
		Actions: map[string]bool{response.ActionRollback: true, response.ActionFullRollback: true, response.ActionPage: true, response.ActionRestartThenRollback: true}}
	for _, t := range cfg.Targets {
		o.Targets[t.Name] = true
	}
	return o
}

func (d *daemon) target(name string) (*config.Target, bool) {
	return findTarget(d.config().Targets, name)
}

// verifier checks, for the executor's verify step, that every trigger of a
// target with data is back within its threshold. No data is not a failure
// here (a low-traffic service may have none), but a breach is.
type verifier struct{ d *daemon }

func (v *verifier) Verify(ctx context.Context, ns, name string) error {
	cfg := v.d.config()
	queriers := v.d.src.queriers()
	var breaches []string
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		if t.Namespace != ns || t.Deployment != name {
			continue
		}
		for j := range t.Triggers {
			s := TriggerSpec(t.Name, &t.Triggers[j])
			q, ok := queriers[s.Backend]
			if !ok {
				continue
			}
			series, err := q.Query(ctx, s.Query, time.Now())
			if err != nil {
				continue
			}
			val, err := evaluator.Select(series, s.Match)
			if err != nil {
				continue
			}
			if s.VolumeQuery != "" && s.Rule.MinRate > 0 {
				vs, err := q.Query(ctx, s.VolumeQuery, time.Now())
				if err != nil {
					continue
				}
				if vol, err := evaluator.Select(vs, s.Match); err != nil || vol < s.Rule.MinRate {
					continue
				}
			}
			if (s.Rule.Op == trigger.Above && val > s.Rule.Threshold) || (s.Rule.Op == trigger.Below && val < s.Rule.Threshold) {
				breaches = append(breaches, fmt.Sprintf("%s = %.4g (%s %g)", s.Rule.Name, val, s.Rule.Op, s.Rule.Threshold))
			}
		}
	}
	if len(breaches) > 0 {
		sort.Strings(breaches)
		return fmt.Errorf("still breaching: %v", breaches)
	}
	return nil
}
