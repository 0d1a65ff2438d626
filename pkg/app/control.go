package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/pkg/notify/slack"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/version"
)

// buildNotifiers makes the PagerDuty, Slack and webhook notifiers the
// config asks for, each filtered by the targets' opt-outs (the incident
// recorder comes with the records, buildRecords).
func buildNotifiers(cfg *config.Config, logger *zap.Logger) ([]notify.Notifier, error) {
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
			return nil, fmt.Errorf("pagerduty: %w", err)
		}
		out = append(out, notify.Filter(pd, wants(func(t *config.TargetNotify) *bool { return t.PagerDuty })))
	}
	if u := string(n.Slack.WebhookURL); u != "" {
		sl, err := slack.New(slack.Options{WebhookURL: u, Channel: n.Slack.Channel, Template: tmpl, Timeout: time.Duration(n.Slack.Timeout)}, logger.Named("slack"))
		if err != nil {
			return nil, fmt.Errorf("slack: %w", err)
		}
		out = append(out, notify.Filter(sl, wants(func(t *config.TargetNotify) *bool { return t.Slack })))
	}
	more, err := buildHTTPNotifiers(cfg, wants)
	if err != nil {
		return nil, err
	}
	return append(out, more...), nil
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
	detail, err := c.d.resp.Ask(ctx, response.Ask{Target: req.Target, Action: normalizeAction(req.Action), Reason: req.Reason,
		By: notify.Requester{Kind: notify.RequestedByAPI, Name: req.Caller}})
	if err == nil {
		c.d.log.Info("manual request accepted", zap.String("target", req.Target), zap.String("action", req.Action),
			zap.String("caller", req.Caller), zap.String("reason", req.Reason))
	}
	return c.result(req.Target, req.Action, detail, err)
}

func (c *controller) result(target, action, detail string, err error) (api.ActionResult, error) {
	switch {
	case errors.Is(err, response.ErrUnknownTarget):
		return api.ActionResult{}, fmt.Errorf("%w: %q", api.ErrUnknownTarget, target)
	case errors.Is(err, response.ErrUnknownAction):
		return api.ActionResult{}, fmt.Errorf("%w: action %q", api.ErrRefused, action)
	case errors.Is(err, response.ErrRefusedByInterlock), errors.Is(err, response.ErrAlertPredatesRevision), errors.Is(err, response.ErrAlreadyTakenUp):
		return api.ActionResult{}, fmt.Errorf("%w: %s", api.ErrRefused, detail)
	case errors.Is(err, response.ErrNotLeader):
		return api.ActionResult{}, fmt.Errorf("%w: %v", api.ErrNotLeader, err)
	case errors.Is(err, response.ErrUnavailable):
		return api.ActionResult{}, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
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
	c.d.log.Info("freeze changed", zap.String("target", target), zap.Bool("frozen", frozen), zap.String("reason", reason),
		zap.String("caller", api.Caller(ctx)))
	return nil
}

// Alerts acts on each request of the notification (through the same
// interlocks as a trigger, one request per alert firing), pages about the
// alerts it cannot act on, and ends the requests of resolved alerts.
func (c *controller) Alerts(ctx context.Context, n *alertmanager.Notification) ([]api.ActionResult, error) {
	out := make([]api.ActionResult, 0, len(n.Requests)+len(n.Rejected))
	for _, r := range n.Requests {
		detail, err := c.d.resp.Ask(ctx, response.Ask{Target: r.Target, Action: r.Action, Reason: r.Reason, Security: r.Security,
			By:    notify.Requester{Kind: notify.RequestedByAlertmanager, Name: r.AlertName},
			Alert: &response.AlertRef{Fingerprint: r.Fingerprint, StartsAt: r.StartsAt, Name: r.AlertName, Labels: r.Labels}})
		res, err := c.result(r.Target, r.Action, detail, err)
		if err != nil {
			res = api.ActionResult{Target: r.Target, Action: r.Action, Detail: err.Error(),
				Retry: errors.Is(err, api.ErrNotLeader) || errors.Is(err, api.ErrUnavailable)}
		}
		res.Fingerprint = r.Fingerprint
		c.d.log.Info("alert request", zap.String("target", r.Target), zap.String("alert", r.AlertName), zap.String("fingerprint", r.Fingerprint),
			zap.Time("startsAt", r.StartsAt), zap.Bool("accepted", res.Accepted), zap.Bool("retry", res.Retry), zap.String("detail", res.Detail))
		out = append(out, res)
	}
	for _, r := range n.Rejected {
		c.d.resp.Reject(notify.Requester{Name: r.AlertName, Fingerprint: r.Fingerprint, StartsAt: r.StartsAt, Labels: r.Labels},
			r.Target, r.Labels[alertmanager.LabelSecurity] == "true", r.Err.Error())
		out = append(out, api.ActionResult{Target: r.Target, Action: r.Action, Fingerprint: r.Fingerprint, Rejected: true,
			Detail: r.Err.Error() + " (paged)"})
	}
	if len(n.Resolved) > 0 && c.d.resp.Leading() {
		c.d.resp.Resolved(ctx, n.Resolved)
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
