package ha

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// amAlert is one alert of an Alertmanager v4 webhook payload.
type amAlert struct {
	status      string // firing (default) or resolved
	labels      map[string]string
	startsAt    time.Time
	fingerprint string
}

// amPayload is the webhook body Alertmanager would send for alerts.
func amPayload(alerts ...amAlert) string {
	var out []any
	for _, a := range alerts {
		st := a.status
		if st == "" {
			st = "firing"
		}
		m := map[string]any{"status": st, "labels": a.labels, "annotations": map[string]string{"summary": "CVE in the auth path"},
			"startsAt": a.startsAt.UTC().Format(time.RFC3339Nano), "fingerprint": a.fingerprint}
		if st == "resolved" {
			m["endsAt"] = time.Now().UTC().Format(time.RFC3339Nano)
		}
		out = append(out, m)
	}
	b, _ := json.Marshal(map[string]any{"version": "4", "status": "firing", "receiver": "rollguard", "groupKey": "{}:{}", "alerts": out})
	return string(b)
}

// securityAlert asks for a rollback of the test's Deployment.
func securityAlert(fingerprint string, startsAt time.Time) amAlert {
	return amAlert{fingerprint: fingerprint, startsAt: startsAt,
		labels: map[string]string{"alertname": "SecurityRollback", "rollguard_target": deployName, "rollguard_action": "rollback"}}
}

// postAlerts sends a webhook payload and decodes its results.
func postAlerts(t *testing.T, d *daemon, body string) (int, []api.ActionResult, string) {
	t.Helper()
	code, b := d.call(http.MethodPost, "/api/v1/alerts/alertmanager", apiToken, body)
	var out struct{ Results []api.ActionResult }
	_ = json.Unmarshal(b, &out)
	return code, out.Results, string(b)
}

// deployedAt is when the Deployment's current revision (its ReplicaSet of
// img) was created.
func (h *harness) deployedAt(name, img string) time.Time {
	h.t.Helper()
	var at time.Time
	for _, rs := range h.replicaSets(name) {
		if rs.Spec.Template.Spec.Containers[0].Image == img && rs.CreationTimestamp.After(at) {
			at = rs.CreationTimestamp.Time
		}
	}
	if at.IsZero() {
		h.t.Fatalf("no replicaset of %s for %s", img, name)
	}
	return at
}

// TestAlertBeforeDeployIsNotApplied: an alert that began before the
// current revision was deployed is not about it. It is not applied (no
// write) and a human is paged, naming why.
func TestAlertBeforeDeployIsNotApplied(t *testing.T) {
	t.Parallel()
	h, d := manualSetup(t, "alert-old")
	w := h.watchWrites(h.get(deployName))
	startsAt := h.deployedAt(deployName, badImage).Add(-2 * time.Minute)

	code, res, body := postAlerts(t, d, amPayload(securityAlert("a0ld", startsAt)))
	if code != http.StatusOK || len(res) != 1 || res[0].Accepted || !strings.Contains(res[0].Detail, "before revision") {
		t.Errorf("alert that predates the revision = %d %s, want 200 with one result not accepted, naming the revision", code, body)
	}
	time.Sleep(3 * time.Second) // a queued plan would have started by now
	w.assertNone()
	eventually(t, "cannot_rollback page", 15*time.Second, func() (bool, string) {
		return len(h.events("cannot_rollback")) == 1, fmt.Sprint(h.summaries(h.events("")))
	})
	if got := h.events("cannot_rollback")[0].Payload.Summary; !strings.Contains(got, "SecurityRollback") || !strings.Contains(got, "before revision") {
		t.Errorf("page %q, want it to name the alert and that it predates the revision", got)
	}
}

// TestAlertRepeatIsNotAFreshRequest: Alertmanager re-sends a firing alert
// at repeat_interval with the same fingerprint and startsAt. After the
// first delivery rolled the bad version back and a fix was deployed, the
// repeat must not roll the fix back. Once the alert resolved, the same
// labels firing again (a new startsAt) are a new request.
func TestAlertRepeatIsNotAFreshRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "alert-repeat")
	h.createDeployment(deployName, goodImage)
	d := h.startDaemon(h.writeConfig(t.TempDir(), daemonConfig{interlocks: map[string]any{"cooldown": "1s"},
		targets: []target{quietTarget()}}), "rollguard-alert-repeat")
	h.deploy(deployName, badImage, "")
	h.waitRollout(deployName, 30*time.Second)

	first := securityAlert("f1rst", time.Now().Add(-time.Second))
	code, res, body := postAlerts(t, d, amPayload(first))
	if code != http.StatusOK || len(res) != 1 || !res[0].Accepted {
		t.Fatalf("first alert = %d %s, want 200 with one accepted result", code, body)
	}
	h.checkRolledBack("alertmanager SecurityRollback")

	const fixImage = "pggit-api:v1.1.1"
	h.deploy(deployName, fixImage, "")
	h.waitRollout(deployName, 30*time.Second)
	w := h.watchWrites(h.get(deployName))
	code, res, body = postAlerts(t, d, amPayload(first))
	if code != http.StatusOK || len(res) != 1 || res[0].Accepted {
		t.Errorf("repeat of the handled alert = %d %s, want 200 with one result not accepted", code, body)
	}
	time.Sleep(3 * time.Second)
	w.assertNone()
	if got := image(h.get(deployName)); got != fixImage {
		t.Fatalf("image %s after the repeat, want the fix %s kept", got, fixImage)
	}
	if n := len(d.logLines("rollback plan started")); n != 1 {
		t.Errorf("%d plans started, want 1", n)
	}

	// Resolved, then firing again about the fix: a new request.
	resolved := first
	resolved.status = "resolved"
	if code, _, body := postAlerts(t, d, amPayload(resolved)); code != http.StatusOK {
		t.Fatalf("resolved alert = %d %s", code, body)
	}
	again := securityAlert("f1rst", time.Now())
	code, res, body = postAlerts(t, d, amPayload(again))
	if code != http.StatusOK || len(res) != 1 || !res[0].Accepted {
		t.Fatalf("alert firing again after it resolved = %d %s, want one accepted result", code, body)
	}
	eventually(t, "a second plan, rolling the fix back", 60*time.Second, func() (bool, string) {
		n := len(d.logLines("rollback plan started"))
		j, _ := h.journal(deployName)
		return n == 2 && j != nil && j.State == rollback.RunSucceeded && image(h.get(deployName)) == goodImage,
			fmt.Sprintf("%d plans started, image %s", n, image(h.get(deployName)))
	})
}
