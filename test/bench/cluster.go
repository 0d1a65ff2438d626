package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/promquery"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

const (
	benchNamespace = "rollguard-bench"
	goodImage      = "pggit-api:v1.0.3"
	container      = "api"
	replicas       = 4
)

type cluster struct {
	kc kubernetes.Interface
}

func newCluster(env sandboxenv.Env) (*cluster, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", env["KUBECONFIG"], err)
	}
	rc.QPS, rc.Burst = 50, 100
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &cluster{kc: kc}, nil
}

func (c *cluster) ensureNamespace(ctx context.Context) error {
	_, err := c.kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", benchNamespace, err)
	}
	// Pods are refused until the namespace's default ServiceAccount exists.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); sleep(ctx, 200*time.Millisecond) {
		if _, err := c.kc.CoreV1().ServiceAccounts(benchNamespace).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return nil
		}
	}
	return fmt.Errorf("namespace %s: no default service account after 30s", benchNamespace)
}

// prepare creates a simulated Deployment at goodImage with 4 ready
// replicas, then rolls it to badImage and waits for that rollout too: the
// rollback then has a previous revision to pin, as after a real deploy.
func (c *cluster) prepare(ctx context.Context, name, badImage string) error {
	n := int32(replicas)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace, Labels: map[string]string{"pggitsim.rollguard.io/simulate": "true", "rollguard.io/bench": "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: container, Image: goodImage}}},
			},
		},
	}
	if _, err := c.kc.AppsV1().Deployments(benchNamespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment %s: %w", name, err)
	}
	if _, err := c.waitImageReady(ctx, name, goodImage, replicas, 90*time.Second); err != nil {
		return err
	}
	if err := c.setImage(ctx, name, badImage); err != nil {
		return err
	}
	_, err := c.waitImageReady(ctx, name, badImage, replicas, 90*time.Second)
	return err
}

func (c *cluster) setImage(ctx context.Context, name, image string) error {
	d, err := c.kc.AppsV1().Deployments(benchNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get deployment %s: %w", name, err)
	}
	d.Spec.Template.Spec.Containers[0].Image = image
	if _, err := c.kc.AppsV1().Deployments(benchNamespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set image of deployment %s: %w", name, err)
	}
	return nil
}

// runUntilReady runs cmd (a rollback) and meanwhile waits, for at most
// timeout, for the Deployment name to run all its replicas of goodImage.
// It returns when cmd started and ended and when the replicas were ready
// (zero: not within timeout); after cmd's error it does not wait.
func (c *cluster) runUntilReady(ctx context.Context, cmd *exec.Cmd, name string, timeout time.Duration) (start, end, ready time.Time, err error) {
	readyCh := make(chan time.Time, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start = time.Now()
	go func() {
		t, _ := c.waitImageReady(wctx, name, goodImage, replicas, timeout)
		readyCh <- t
	}()
	if err := cmd.Run(); err != nil {
		return start, time.Now(), time.Time{}, err
	}
	end = time.Now()
	return start, end, <-readyCh, nil
}

// waitImageReady polls every 100 ms until the Deployment runs n available
// replicas of image (kubectl rollout status's test) and returns when it
// first saw that.
func (c *cluster) waitImageReady(ctx context.Context, name, image string, n int32, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		d, err := c.kc.AppsV1().Deployments(benchNamespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Spec.Template.Spec.Containers[0].Image == image && d.Status.ObservedGeneration >= d.Generation &&
			d.Spec.Replicas != nil && *d.Spec.Replicas == n &&
			d.Status.UpdatedReplicas == n && d.Status.AvailableReplicas == n && d.Status.Replicas == n {
			return time.Now(), nil
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("deployment %s/%s: no %d ready replicas of %s within %s", benchNamespace, name, n, image, timeout)
}

// remove deletes a bench Deployment and its journal without waiting.
func (c *cluster) remove(ctx context.Context, name string) {
	bg := metav1.DeletePropagationBackground
	_ = c.kc.AppsV1().Deployments(benchNamespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
}

func (c *cluster) cleanJournals(ctx context.Context) {
	_ = c.kc.CoreV1().ConfigMaps(benchNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "rollguard.io/journal=true"})
}

// rollguardProc is a running `rollguard run`.
type rollguardProc struct {
	cmd  *exec.Cmd
	log  string
	base string
}

func startRollguard(ctx context.Context, bin, cfg, logPath, base string) (*rollguardProc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "POD_NAME=rollguard-bench")
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	f.Close()
	p := &rollguardProc{cmd: cmd, log: logPath, base: base}
	if err := waitHTTP200(ctx, base+"/readyz", 30*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("rollguard not ready (log %s): %w", logPath, err)
	}
	return p, nil
}

func (p *rollguardProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func waitHTTP200(ctx context.Context, u string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := ""
	cl := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := cl.Get(u)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return fmt.Errorf("GET %s: not 200 within %s: %s", u, timeout, last)
}

// logLine is the part of rollguard's JSON log lines the bench reads.
type logLine struct {
	TS          string `json:"ts"`
	Msg         string `json:"msg"`
	Trigger     string `json:"trigger"`
	FirstBreach string `json:"firstBreach"`
	Step        string `json:"step"`
	Index       int    `json:"index"`
	Error       string `json:"error"`
}

// nothingToResume: the refusal a leader's term logs when it starts by
// resuming what an earlier leader left unfinished and finds nothing. No
// failure of the run being timed.
func (l logLine) nothingToResume() bool {
	return l.Msg == "rollback refused" && strings.Contains(l.Error, "no unfinished run to resume")
}

// detection is what a daemon's log says of one fault: when its trigger
// fired (and the first breaching sample it saw), when the rollback's first
// step started, and whether the plan finished.
type detection struct {
	fired        time.Time // "trigger fired"
	firstBreach  time.Time // the trigger's first breaching sample, from the log
	stepStart    time.Time // the rollback's first step started
	planFinished bool
}

// read takes in one log line; a plan that stopped or was refused is an
// error of the run (a leader's term finding nothing to resume is not).
func (d *detection) read(l logLine) error {
	switch l.Msg {
	case "trigger fired":
		if d.fired.IsZero() {
			d.fired = l.time()
			d.firstBreach, _ = time.Parse(time.RFC3339Nano, l.FirstBreach)
		}
	case "rollback step started":
		if d.stepStart.IsZero() {
			d.stepStart = l.time()
		}
	case "rollback plan finished":
		d.planFinished = true
	case "rollback plan stopped", "rollback refused", "rollback preflight failed", "cannot roll back":
		if !l.nothingToResume() {
			return fmt.Errorf("%s %s", l.Msg, l.Error)
		}
	}
	return nil
}

// time parses zap's ISO8601 encoder output (millisecond precision).
func (l logLine) time() time.Time {
	t, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
	if err != nil {
		return time.Time{}
	}
	return t
}

// promSample is one raw sample of a range-vector selector.
type promSample struct {
	t time.Time
	v float64
}

// promMatrix runs an instant query whose result is a matrix (a range
// vector selector) and returns each series' raw samples.
func promMatrix(ctx context.Context, base, q string, at time.Time) ([][]promSample, error) {
	var result []struct {
		Values [][2]any `json:"values"`
	}
	if err := promquery.Instant(ctx, base, q, at, &result); err != nil {
		return nil, err
	}
	var out [][]promSample
	for _, r := range result {
		var ss []promSample
		for _, v := range r.Values {
			ts, _ := v[0].(float64)
			s, _ := v[1].(string)
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				continue
			}
			sec := int64(ts)
			ss = append(ss, promSample{t: time.Unix(sec, int64((ts-float64(sec))*1e9)), v: f})
		}
		out = append(out, ss)
	}
	return out, nil
}

func httpDo(ctx context.Context, method, u, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// podTimeline is what a watch of a Deployment's Pods saw of its rollback:
// when the previous version first served alone (no Pod of the bad image
// serving, at least one of the previous image Ready) and when it was back
// at full count (n Ready of the previous image, none of the bad one).
// Serving is the endpoints controller's view: Ready and not terminating.
type podTimeline struct {
	mu                sync.Mutex
	serving, finished time.Time
}

func (p *podTimeline) get() (time.Time, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving, p.finished
}

// watchPods follows the Pods of Deployment name until ctx ends, stamping
// each change as it arrives.
func (c *cluster) watchPods(ctx context.Context, name, good, bad string, n int) *podTimeline {
	tl := &podTimeline{}
	go func() {
		pods := map[types.UID]*corev1.Pod{}
		check := func() {
			goodReady, badServing := 0, 0
			for _, p := range pods {
				if !pggitsim.PodReady(p) {
					continue
				}
				switch podImage(p) {
				case good:
					goodReady++
				case bad:
					badServing++
				}
			}
			now := time.Now()
			tl.mu.Lock()
			if tl.serving.IsZero() && badServing == 0 && goodReady > 0 {
				tl.serving = now
			}
			if tl.finished.IsZero() && badServing == 0 && goodReady == n {
				tl.finished = now
			}
			tl.mu.Unlock()
		}
		sel := "app=" + name
		for ctx.Err() == nil {
			list, err := c.kc.CoreV1().Pods(benchNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			clear(pods)
			for i := range list.Items {
				pods[list.Items[i].UID] = &list.Items[i]
			}
			check()
			w, err := c.kc.CoreV1().Pods(benchNamespace).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
			if err != nil {
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				switch ev.Type {
				case watch.Deleted:
					delete(pods, p.UID)
				case watch.Added, watch.Modified:
					pods[p.UID] = p
				}
				check()
			}
			w.Stop()
		}
	}()
	return tl
}

func podImage(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

// promVector runs an instant query and returns its samples' values.
func promVector(ctx context.Context, base, q string) ([]float64, error) {
	var result []struct {
		Value [2]any `json:"value"`
	}
	if err := promquery.Instant(ctx, base, q, time.Time{}, &result); err != nil {
		return nil, err
	}
	var out []float64
	for _, r := range result {
		s, _ := r.Value[1].(string)
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			out = append(out, f)
		}
	}
	return out, nil
}

// promCount is the number of series an instant query returns.
func promCount(ctx context.Context, base, q string) (int, error) {
	v, err := promVector(ctx, base, q)
	return len(v), err
}

// promScalar is the value of a one-series instant query.
func promScalar(ctx context.Context, base, q string) (float64, error) {
	v, err := promVector(ctx, base, q)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("prometheus query %q: %d series, want 1", q, len(v))
	}
	return v[0], nil
}
