// Command demo is `make demo`: on the running sandbox it deploys pggit-api
// v1.0.3, runs rollguard with short demo windows, deploys the bad v1.1.0,
// and shows rollguard catch it and roll it back: trigger states as the
// window fills, each executor step, the page PagerDuty received, the Slack
// messages and the incident timeline, all of it also live in rollguard's
// web console, whose address it prints. It exits non-zero when the
// rollback did not happen; with --keep it leaves rollguard (and so the
// console) running until interrupted.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/test/jsonlog"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const (
	namespace  = "production"
	deployment = "pggit-api"
	goodImage  = "pggit-api:v1.0.3"
	badImage   = "pggit-api:v1.1.0"
)

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin := flag.String("rollguard", "bin/rollguard", "rollguard binary")
	window := flag.Duration("for", 15*time.Second, "the demo trigger window (the runbook's is 60s)")
	keep := flag.Bool("keep", false, "leave rollguard and its console running after the demo, until interrupted")
	flag.Parse()
	if err := demo(ctx, *bin, *window, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		return 1
	}
	return 0
}

func say(format string, args ...any) {
	fmt.Printf("[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func demo(ctx context.Context, bin string, window time.Duration, keep bool) error {
	env, err := sandboxenv.Read(sandboxenv.Path())
	if err != nil {
		return fmt.Errorf("sandbox env (is the sandbox up? make sandbox-up): %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dir := filepath.Join(env["SANDBOX_STATE_DIR"], "demo")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	say("1/6 deploying %s/%s %s with 4 replicas", namespace, deployment, goodImage)
	if err := deployGood(ctx, kc); err != nil {
		return err
	}
	if err := waitImageReady(ctx, kc, goodImage, 4, 90*time.Second); err != nil {
		return err
	}

	prefix := fmt.Sprintf("/t/demo-%d", time.Now().UnixNano())
	// A free port, so a busy one (another rollguard, anything) can never
	// make the demo talk to the wrong daemon.
	p, err := localproc.FreePort()
	if err != nil {
		return err
	}
	port := strconv.Itoa(p)
	cfgPath, token, err := writeConfig(dir, env, prefix, window, port)
	if err != nil {
		return err
	}
	say("2/6 starting rollguard: interval 1s, error rate > 5%% for %s (the runbook says 60s; shortened for the demo), config %s", window, cfgPath)
	logPath := filepath.Join(dir, "rollguard.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "POD_NAME=rollguard-demo")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	// rollguard must outlive the demo: if it dies early, say so at once.
	var stopping atomic.Bool
	waited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(waited)
		if !stopping.Load() {
			fmt.Fprintf(os.Stderr, "\ndemo FAILED: rollguard exited early (%v); log: %s\n", err, logPath)
			os.Exit(1)
		}
	}()
	defer func() {
		stopping.Store(true)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(25 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}()
	apiURL := "http://127.0.0.1:" + port
	client := &api.Client{BaseURL: apiURL, Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
	if err := waitReady(ctx, apiURL, 30*time.Second); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}
	say("   rollguard is ready at %s (log: %s)", apiURL, logPath)
	say("   web console: %s/ (actions unlock with the token in %s)", apiURL, filepath.Join(dir, "api-token"))
	settle := 6 * time.Second
	say("   letting healthy traffic flow for %s", settle)
	sleep(ctx, settle)

	say("3/6 deploying the bad version %s (20%% of requests fail)", badImage)
	t0 := time.Now()
	if err := setImage(ctx, kc, badImage); err != nil {
		return err
	}

	say("4/6 watching: the trigger must hold for the whole window before anything is done")
	tail := jsonlog.NewTail[logEvent](logPath)
	deadline := time.Now().Add(window + 90*time.Second)
	var finished, failed bool
	lastLine := ""
	for !finished && time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s, err := client.Status(ctx); err == nil {
			for _, tr := range s.Triggers {
				if tr.Trigger != "error-rate" {
					continue
				}
				line := fmt.Sprintf("trigger %-10s state=%-7s value=%s", tr.Trigger, tr.State, fmtValue(tr.Value))
				if !tr.BreachStart.IsZero() {
					held := time.Since(tr.BreachStart).Truncate(time.Second)
					if held > window {
						held = window
					}
					line += fmt.Sprintf(" window %s [%s%s] %s/%s", "", strings.Repeat("#", int(held*20/window)), strings.Repeat(".", 20-int(held*20/window)), held, window)
				}
				if line != lastLine {
					say("   %s", line)
					lastLine = line
				}
			}
		}
		for _, ev := range tail.Next() {
			switch ev.Msg {
			case "trigger fired":
				say(">> FIRED: %s value %v, breach since %s", ev.Trigger, ev.Value, ev.FirstBreach)
			case "rollback plan started":
				say(">> rollback plan %s started (recorded %d replicas)", ev.Action, ev.Replicas)
			case "rollback step started":
				say(">>   step %d %s ...", ev.Index, ev.Step)
			case "rollback step done":
				say(">>   step %s done: %s", ev.Step, ev.Detail)
			case "rollback step failed":
				say(">>   step %s FAILED: %s", ev.Step, ev.Error)
			case "rollback plan finished":
				finished = true
			case "rollback plan stopped", "rollback refused", "rollback preflight failed", "cannot roll back":
				finished, failed = true, true
			}
		}
		sleep(ctx, time.Second)
	}
	if !finished || failed {
		return fmt.Errorf("the rollback did not finish (log: %s)", logPath)
	}
	say("   rollback finished %s after the bad deploy", time.Since(t0).Round(100*time.Millisecond))

	say("5/6 checking the result")
	if err := waitImageReady(ctx, kc, goodImage, 4, 60*time.Second); err != nil {
		return err
	}
	say("   deployment runs %s with 4 ready replicas", goodImage)
	if v, err := waitErrorRatio(ctx, env["PROMETHEUS_URL"], 0.05, 45*time.Second); err != nil {
		return err
	} else {
		say("   error ratio in Prometheus back to %.3f", v)
	}

	say("6/6 what humans were told")
	sleep(ctx, 2*time.Second) // let the notification queue deliver the last events
	printPages(env["RECEIVER_URL"], prefix)
	printIncident(ctx, apiURL)
	fmt.Printf("\nDemo OK: the bad deploy was caught and rolled back. Logs and incident files: %s\n", dir)
	if keep {
		fmt.Printf("\nrollguard keeps running (--keep). Web console: %s/\n", apiURL)
		fmt.Printf("The API token (for freeze, unfreeze, rollback in the console) is in %s\n", filepath.Join(dir, "api-token"))
		fmt.Printf("Press Ctrl-C to stop rollguard; the sandbox stays up until make sandbox-down.\n")
		<-ctx.Done()
		say("stopping rollguard")
	}
	return nil
}

func writeConfig(dir string, env sandboxenv.Env, prefix string, window time.Duration, port string) (string, string, error) {
	token := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	files := map[string]string{
		"pagerduty-routing-key": "demo0routing0key0000000000000000",
		"slack-webhook-url":     env["RECEIVER_URL"] + prefix + "/slack/webhook",
		"api-token":             token,
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			return "", "", err
		}
	}
	cfg := fmt.Sprintf(`# Generated by make demo: the runbook's error-rate trigger with a short window.
global:
  interval: 1s
  for: %s
  blindAfter: 1m
  listenAddress: 127.0.0.1:%s
  logLevel: info
  prometheus: {url: %q, timeout: 1s}
  kubernetes: {kubeconfig: %q}
  interlocks: {cooldown: 5m, maxRollbacksPerHour: 3, maxRevisionAge: 2h}
  api: {tokenFile: api-token}
  notify:
    pagerduty: {routingKeyFile: pagerduty-routing-key, endpoint: %q}
    slack: {webhookURLFile: slack-webhook-url, channel: "#pggit-incidents"}
    # The record lives in the cluster, in the demo's namespace.
    incidentStore: {namespace: %s}
    statusURL: http://127.0.0.1:%s
%stargets:
%s    triggers:
      - {name: error-rate, kind: errorRate, above: 0.05, minRate: 1, action: rollback}
      - {name: latency-p99, kind: latencyP99, above: 5, action: rollback}
    rollback:
      strategy: quick
      rampSteps: [2]
      rampPause: 3s
      rolloutTimeout: 30s
      verifyWindow: 10s
`, window, port, env["PROMETHEUS_URL"], env["KUBECONFIG"], env["RECEIVER_URL"]+prefix,
		namespace, port, sandboxfixture.ExampleQueries("5s").YAML(), sandboxfixture.SimulatedTarget(env["SIM_URL"], "pggit-api", namespace, deployment))
	path := filepath.Join(dir, "rollguard.yaml")
	return path, token, os.WriteFile(path, []byte(cfg), 0o644)
}

func deployGood(ctx context.Context, kc kubernetes.Interface) error {
	replicas := int32(4)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: deployment, Namespace: namespace, Labels: map[string]string{"pggitsim.rollguard.io/simulate": "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": deployment}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": deployment}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: goodImage}}},
			},
		},
	}
	// Start from a clean history: the demo's rollback target is the
	// previous revision, and an earlier run's journal would say "already
	// rolled back".
	_ = kc.AppsV1().Deployments(namespace).Delete(ctx, deployment, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)})
	_ = kc.CoreV1().ConfigMaps(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "rollguard.io/journal=true"})
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := kc.AppsV1().Deployments(namespace).Create(ctx, d, metav1.CreateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) || time.Now().After(deadline) {
			return fmt.Errorf("create deployment: %w", err)
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

func setImage(ctx context.Context, kc kubernetes.Interface, image string) error {
	d, err := kc.AppsV1().Deployments(namespace).Get(ctx, deployment, metav1.GetOptions{})
	if err != nil {
		return err
	}
	d.Spec.Template.Spec.Containers[0].Image = image
	_, err = kc.AppsV1().Deployments(namespace).Update(ctx, d, metav1.UpdateOptions{})
	return err
}

func waitImageReady(ctx context.Context, kc kubernetes.Interface, image string, n int32, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		d, err := kc.AppsV1().Deployments(namespace).Get(ctx, deployment, metav1.GetOptions{})
		if err == nil && d.Spec.Template.Spec.Containers[0].Image == image && d.Status.ObservedGeneration >= d.Generation &&
			d.Status.UpdatedReplicas == n && d.Status.AvailableReplicas == n && d.Status.Replicas == n {
			return nil
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return fmt.Errorf("deployment %s/%s did not reach %d ready replicas of %s within %s", namespace, deployment, n, image, timeout)
}

func waitReady(ctx context.Context, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = strings.TrimSpace(string(b))
		} else {
			last = err.Error()
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return fmt.Errorf("rollguard not ready within %s: %s", timeout, last)
}

func waitErrorRatio(ctx context.Context, prom string, below float64, timeout time.Duration) (float64, error) {
	q := fmt.Sprintf(`sum(rate(http_requests_total{namespace=%q,deployment=%q,status=~"5.."}[5s]) or vector(0)) / sum(rate(http_requests_total{namespace=%q,deployment=%q}[5s]))`, namespace, deployment, namespace, deployment)
	deadline := time.Now().Add(timeout)
	last := -1.0
	for time.Now().Before(deadline) {
		resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(q))
		if err == nil {
			var body struct {
				Data struct {
					Result []struct {
						Value [2]any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if len(body.Data.Result) == 1 {
				if s, ok := body.Data.Result[0].Value[1].(string); ok {
					var v float64
					if _, err := fmt.Sscan(s, &v); err == nil {
						last = v
						if v < below {
							return v, nil
						}
					}
				}
			}
		}
		sleep(ctx, time.Second)
	}
	return last, fmt.Errorf("error ratio still %.3f after %s", last, timeout)
}

func printPages(receiver, prefix string) {
	get := func(path string) []struct {
		Time   time.Time `json:"time"`
		Body   string    `json:"body"`
		Status int       `json:"status"`
	} {
		var out []struct {
			Time   time.Time `json:"time"`
			Body   string    `json:"body"`
			Status int       `json:"status"`
		}
		resp, err := http.Get(receiver + "/_/received?path=" + url.QueryEscape(prefix+path))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	pd := get("/v2/enqueue")
	fmt.Printf("\n--- PagerDuty (local receiver): %d events ---\n", len(pd))
	for _, r := range pd {
		var ev struct {
			Action  string `json:"event_action"`
			Dedup   string `json:"dedup_key"`
			Payload struct {
				Severity string `json:"severity"`
				Summary  string `json:"summary"`
			} `json:"payload"`
		}
		_ = json.Unmarshal([]byte(r.Body), &ev)
		fmt.Printf("%s %d %-8s %-8s dedup=%s %s\n", r.Time.Format("15:04:05"), r.Status, ev.Action, ev.Payload.Severity, ev.Dedup, clip(ev.Payload.Summary, 110))
	}
	sl := get("/slack/webhook")
	fmt.Printf("\n--- Slack #pggit-incidents (local receiver): %d messages ---\n", len(sl))
	for _, r := range sl {
		var m struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal([]byte(r.Body), &m)
		fmt.Printf("%s\n%s\n\n", r.Time.Format("15:04:05"), m.Text)
	}
}

func printIncident(ctx context.Context, base string) {
	resp, err := http.Get(base + "/api/v1/incidents")
	if err != nil {
		fmt.Println("incident list:", err)
		return
	}
	var list []struct {
		ID string `json:"id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list) == 0 {
		fmt.Println("no incident recorded")
		return
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/incidents/"+list[0].ID+"?format=markdown", nil)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer r2.Body.Close()
	md, _ := io.ReadAll(r2.Body)
	fmt.Printf("--- incident %s (GET /api/v1/incidents/%s?format=markdown) ---\n", list[0].ID, list[0].ID)
	// The timeline is what the runbook's report is about; print it whole.
	in := false
	for _, l := range strings.Split(string(md), "\n") {
		if strings.HasPrefix(l, "Timeline:") {
			in = true
		}
		if in && strings.TrimSpace(l) == "" {
			break
		}
		if in {
			fmt.Println(l)
		}
	}
}

// logEvent is the part of rollguard's JSON log lines the demo shows.
type logEvent struct {
	Msg         string `json:"msg"`
	Trigger     string `json:"trigger"`
	Value       any    `json:"value"`
	FirstBreach string `json:"firstBreach"`
	Action      string `json:"action"`
	Replicas    int    `json:"replicas"`
	Step        string `json:"step"`
	Index       int    `json:"index"`
	Detail      string `json:"detail"`
	Error       string `json:"error"`
	Reason      string `json:"reason"`
}

func fmtValue(v float64) string {
	if v != v {
		return "-"
	}
	return fmt.Sprintf("%.3f", v)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
