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

// quietTarget has a trigger that cannot fire on the simulator's 20 %
// errors: only a human or an alert acts on it.
func quietTarget() target {
	return target{name: deployName, deployment: deployName, above: 0.9, action: "page"}
}

// manualSetup runs one daemon on a Deployment that has just been deployed
// bad, and returns with the bad rollout complete.
func manualSetup(t *testing.T, name string) (*harness, *daemon) {
	h := newHarness(t, name)
	h.createDeployment(deployName, goodImage)
	d := h.startDaemon(h.writeConfig(t.TempDir(), daemonConfig{targets: []target{quietTarget()}}), "rollguard-"+name)
	h.deploy(deployName, badImage, "")
	h.waitRollout(deployName, 30*time.Second)
	return h, d
}

// checkRolledBack waits for the rollback the test asked for and checks it
// is the one rollback of the bad version, journaled with reason.
func (h *harness) checkRolledBack(reason string) {
	h.t.Helper()
	j := h.waitJournal(deployName, 60*time.Second, rollback.RunSucceeded)
	final := h.waitRollout(deployName, 30*time.Second)
	if image(final) != goodImage || ptrVal(final.Spec.Replicas) != replicas {
		h.t.Errorf("final %s with %d replicas, want %s with %d", image(final), ptrVal(final.Spec.Replicas), goodImage, replicas)
	}
	if !strings.Contains(j.Reason, reason) {
		h.t.Errorf("journaled reason %q, want it to contain %q", j.Reason, reason)
	}
	h.checkOneRollback(deployName)
}

// TestManualRollbackAPI: without or with a wrong token the manual
// rollback is refused (401, 403) with no write; an unknown target is 404;
// a frozen target is refused by the guard (409) with no write; with the
// right token on an unfrozen target it rolls back.
func TestManualRollbackAPI(t *testing.T) {
	t.Parallel()
	h, d := manualSetup(t, "manual")
	w := h.watchWrites(h.get(deployName))
	path := "/api/v1/targets/" + deployName + "/rollback"
	body := map[string]string{"reason": "manual: 5xx after deploy", "action": "rollback"}

	for _, c := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", path, "", http.StatusUnauthorized},
		{"wrong token", path, "not-" + apiToken, http.StatusForbidden},
		{"token with a suffix", path, apiToken + "x", http.StatusForbidden},
		{"unknown target", "/api/v1/targets/coredns/rollback", apiToken, http.StatusNotFound},
		{"freeze without token", "/api/v1/targets/" + deployName + "/freeze", "", http.StatusUnauthorized},
		{"reload without token", "/-/reload", "", http.StatusUnauthorized},
	} {
		if code, b := d.call(http.MethodPost, c.path, c.token, body); code != c.want {
			t.Errorf("%s: POST %s = %d %s, want %d", c.name, c.path, code, b, c.want)
		}
	}

	time.Sleep(2 * time.Second) // a queued plan would have started by now
	w.assertNone()

	// The freeze call is a write (an annotation, which bumps the
	// Deployment's generation): watch from after it.
	if code, b := d.call(http.MethodPost, "/api/v1/targets/"+deployName+"/freeze", apiToken, map[string]string{"reason": "maintenance window"}); code != http.StatusOK {
		t.Fatalf("freeze: %d %s", code, b)
	}
	frozen := h.get(deployName)
	if f := frozen.Annotations["rollguard.io/freeze"]; f != "maintenance window" {
		t.Fatalf("freeze annotation %q after the freeze call", f)
	}
	w = h.watchWrites(frozen)
	code, b := d.call(http.MethodPost, path, apiToken, body)
	if code != http.StatusConflict || !strings.Contains(string(b), "frozen") {
		t.Errorf("rollback of a frozen target = %d %s, want 409 naming the freeze", code, b)
	}
	time.Sleep(3 * time.Second) // a queued plan would have started by now
	w.assertNone()
	if n := h.startedChanges(); n != 0 {
		t.Errorf("%d rollbacks started before the allowed call: %q", n, h.changeEvents())
	}

	if code, b := d.call(http.MethodPost, "/api/v1/targets/"+deployName+"/unfreeze", apiToken, map[string]string{"reason": "done"}); code != http.StatusOK {
		t.Fatalf("unfreeze: %d %s", code, b)
	}
	code, b = d.call(http.MethodPost, path, apiToken, body)
	var res api.ActionResult
	if code != http.StatusAccepted || json.Unmarshal(b, &res) != nil || !res.Accepted {
		t.Fatalf("rollback with the right token = %d %s, want 202 accepted", code, b)
	}
	h.checkRolledBack(body["reason"])
}

// alert is an Alertmanager v4 webhook body with one firing alert.
func alert(labels map[string]string) string {
	b, _ := json.Marshal(map[string]any{
		"version": "4", "status": "firing", "receiver": "rollguard", "groupKey": "{}:{}",
		"alerts": []any{map[string]any{"status": "firing", "labels": labels,
			"annotations": map[string]string{"summary": "CVE in the auth path"}, "startsAt": time.Now().UTC().Format(time.RFC3339), "fingerprint": "f00"}},
	})
	return string(b)
}

// TestAlertmanagerWebhook: malformed payloads are 400 with no write, and
// so are payloads whose every alert names an unknown target or action
// (each paged); a valid firing alert naming the target rolls it back,
// through the same interlocks (a frozen target is not touched), even
// beside an alert naming an unknown target in the same group.
func TestAlertmanagerWebhook(t *testing.T) {
	t.Parallel()
	h, d := manualSetup(t, "alerts")
	w := h.watchWrites(h.get(deployName))
	const path = "/api/v1/alerts/alertmanager"
	valid := alert(map[string]string{"alertname": "SecurityRollback", "rollguard_target": deployName, "rollguard_action": "rollback"})

	for _, c := range []struct {
		name, body, token string
		want              int
	}{
		{"no token", valid, "", http.StatusUnauthorized},
		{"wrong token", valid, "nope", http.StatusForbidden},
		{"not json", `{"version":"4","alerts":[`, apiToken, http.StatusBadRequest},
		{"binary", "\x00\xff\xfe{", apiToken, http.StatusBadRequest},
		{"version 3", strings.Replace(valid, `"version":"4"`, `"version":"3"`, 1), apiToken, http.StatusBadRequest},
		{"trailing data", valid + `{"version":"4"}`, apiToken, http.StatusBadRequest},
		{"alert status pending", `{"version":"4","alerts":[{"status":"pending","labels":{"rollguard_target":"` + deployName + `","rollguard_action":"rollback"}}]}`, apiToken, http.StatusBadRequest},
		{"startsAt not a time", `{"version":"4","alerts":[{"status":"firing","startsAt":"soon","labels":{"rollguard_target":"` + deployName + `"}}]}`, apiToken, http.StatusBadRequest},
		{"labels not a map", `{"version":"4","alerts":[{"status":"firing","labels":["rollguard_target"]}]}`, apiToken, http.StatusBadRequest},
		{"unknown action", alert(map[string]string{"rollguard_target": deployName, "rollguard_action": "delete"}), apiToken, http.StatusBadRequest},
		{"unknown target", alert(map[string]string{"rollguard_target": "kube-system-coredns", "rollguard_action": "rollback"}), apiToken, http.StatusBadRequest},
		{"too large", `{"version":"4","x":"` + strings.Repeat("a", 1<<20) + `"}`, apiToken, http.StatusBadRequest},
	} {
		if code, b := d.call(http.MethodPost, path, c.token, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, b, c.want)
		}
	}

	time.Sleep(2 * time.Second)
	w.assertNone()

	// The same interlocks as a trigger: a frozen Deployment is not
	// touched, and the alert's result says why.
	h.annotate(deployName, "rollguard.io/freeze", "incident-42")
	w = h.watchWrites(h.get(deployName))
	code, b := d.call(http.MethodPost, path, apiToken, valid)
	var out struct{ Results []api.ActionResult }
	if code != http.StatusOK || json.Unmarshal(b, &out) != nil || len(out.Results) != 1 || out.Results[0].Accepted ||
		!strings.Contains(out.Results[0].Detail, "frozen") {
		t.Errorf("alert on a frozen target = %d %s, want 200 with one refused result naming the freeze", code, b)
	}
	time.Sleep(3 * time.Second)
	w.assertNone()
	if n := h.startedChanges(); n != 0 {
		t.Errorf("%d rollbacks started before the allowed alert: %q", n, h.changeEvents())
	}
	if _, err := d.tryStatus(); err != nil {
		t.Fatalf("daemon gone after the payloads: %v", err)
	}

	// The refused alert was its firing's one request: unfrozen, it takes
	// a new firing (after the old one resolved) to act. The group also
	// carries an alert naming an unknown target: reported and paged, it
	// does not drop the valid one.
	h.annotate(deployName, "rollguard.io/freeze", "")
	resolved := strings.ReplaceAll(valid, `"status":"firing"`, `"status":"resolved"`)
	if code, b := d.call(http.MethodPost, path, apiToken, resolved); code != http.StatusOK {
		t.Fatalf("resolved alert = %d %s", code, b)
	}
	again := strings.Replace(alert(map[string]string{"alertname": "SecurityRollback", "rollguard_target": deployName, "rollguard_action": "rollback"}),
		`"alerts":[`, `"alerts":[{"status":"firing","labels":{"alertname":"Typo","rollguard_target":"other"},"fingerprint":"typo"},`, 1)
	code, b = d.call(http.MethodPost, path, apiToken, again)
	out.Results = nil
	if code != http.StatusOK || json.Unmarshal(b, &out) != nil || len(out.Results) != 2 || !out.Results[0].Accepted ||
		!out.Results[1].Rejected || !strings.Contains(out.Results[1].Detail, "not a configured target") {
		t.Fatalf("valid alert beside an unknown target = %d %s, want 200, the valid one accepted and the other rejected", code, b)
	}
	eventually(t, "the unknown target paged", 15*time.Second, func() (bool, string) {
		for _, e := range h.events("cannot_rollback") {
			if strings.Contains(e.Payload.Summary, "cannot act on alert Typo (fingerprint typo)") {
				return true, ""
			}
		}
		return false, fmt.Sprint(h.summaries(h.events("")))
	})
	h.checkRolledBack("alertmanager SecurityRollback: CVE in the auth path")
	if n := len(d.logLines("rollback plan started")); n != 1 {
		t.Errorf("%d plans started, want 1", n)
	}
}
