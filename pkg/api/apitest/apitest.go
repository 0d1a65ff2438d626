// Package apitest is a daemon behind pkg/api's handler for unit tests: an
// api.Controller whose answers each test sets and which records what it
// was asked. Only tests import it.
package apitest

import (
	"context"
	"fmt"
	"sync"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/api"
)

// Answer is what a Rollback of a known target gets: accepted with Detail,
// or Err.
type Answer struct {
	Detail string
	Err    error
}

// Freeze is one SetFreeze call.
type Freeze struct {
	Target string
	Frozen bool
	Reason string
}

// Controller is an api.Controller. Its fields are set before the handler
// serves; the calls it records may be read while it serves.
type Controller struct {
	// State is the answer to Status.
	State api.Status
	// IsReady and NotReady are the answer to Ready.
	IsReady  bool
	NotReady string
	// Targets are the targets the daemon knows, each with the answer to a
	// Rollback of it; any other target is api.ErrUnknownTarget, for a
	// Rollback and a SetFreeze alike.
	Targets map[string]Answer
	// Retry makes every alert request's result ask to be sent again (not
	// judged) instead of being accepted.
	Retry bool
	// Alerting is the answer to AlertOptions.
	Alerting alertmanager.Options

	mu        sync.Mutex
	calls     []string
	rollbacks []api.ActionRequest
	freezes   []Freeze
}

var _ api.Controller = (*Controller)(nil)

// Status returns c.State.
func (c *Controller) Status() api.Status { return c.State }

// Ready returns c.IsReady and c.NotReady.
func (c *Controller) Ready() (bool, string) { return c.IsReady, c.NotReady }

// Rollback records req and answers as c.Targets says.
func (c *Controller) Rollback(_ context.Context, req api.ActionRequest) (api.ActionResult, error) {
	call := "rollback " + req.Target + " " + req.Action + " " + req.Reason
	if req.Caller != "" {
		call += " by " + req.Caller
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
	c.rollbacks = append(c.rollbacks, req)
	a, ok := c.Targets[req.Target]
	switch {
	case !ok:
		return api.ActionResult{}, fmt.Errorf("%w: %q", api.ErrUnknownTarget, req.Target)
	case a.Err != nil:
		return api.ActionResult{}, a.Err
	}
	return api.ActionResult{Target: req.Target, Action: req.Action, Accepted: true, Detail: a.Detail}, nil
}

// SetFreeze records the call; it succeeds for a target in c.Targets.
func (c *Controller) SetFreeze(_ context.Context, target string, frozen bool, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "freeze "+target)
	c.freezes = append(c.freezes, Freeze{Target: target, Frozen: frozen, Reason: reason})
	if _, ok := c.Targets[target]; !ok {
		return fmt.Errorf("%w: %q", api.ErrUnknownTarget, target)
	}
	return nil
}

// Alerts records n's requests and rejected alerts and answers each: a
// request accepted (or to be sent again, with c.Retry), a rejected alert
// rejected with its error.
func (c *Controller) Alerts(_ context.Context, n *alertmanager.Notification) ([]api.ActionResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []api.ActionResult
	for _, r := range n.Requests {
		c.calls = append(c.calls, "alert "+r.Target+" "+r.Action)
		out = append(out, api.ActionResult{Target: r.Target, Action: r.Action, Accepted: !c.Retry, Retry: c.Retry, Fingerprint: r.Fingerprint})
	}
	for _, r := range n.Rejected {
		c.calls = append(c.calls, "rejected "+r.Target)
		out = append(out, api.ActionResult{Target: r.Target, Action: r.Action, Rejected: true, Detail: r.Err.Error()})
	}
	return out, nil
}

// Reload records the call and succeeds.
func (c *Controller) Reload(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "reload")
	return nil
}

// AlertOptions returns c.Alerting.
func (c *Controller) AlertOptions() alertmanager.Options { return c.Alerting }

// Calls lists every call in order, one line each: "rollback <target>
// <action> <reason>[ by <caller>]", "freeze <target>", "alert <target>
// <action>", "rejected <target>", "reload".
func (c *Controller) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// Rollbacks lists the Rollback requests in order.
func (c *Controller) Rollbacks() []api.ActionRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]api.ActionRequest(nil), c.rollbacks...)
}

// Freezes lists the SetFreeze calls in order.
func (c *Controller) Freezes() []Freeze {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Freeze(nil), c.freezes...)
}

// Reset forgets the calls recorded so far.
func (c *Controller) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls, c.rollbacks, c.freezes = nil, nil, nil
}
