package incident

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/statestore"
)

const ns = "rollguard"

var c0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// newFake is a clientset whose ConfigMaps keep a resourceVersion and
// refuse a write from a stale one, as the API server does (the fake's
// tracker does neither).
func newFake() *fake.Clientset {
	c := fake.NewClientset()
	var mu sync.Mutex
	rv := 0
	c.PrependReactor("*", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		switch a.GetVerb() {
		case "create":
			a := a.(k8stesting.CreateAction)
			cm := a.GetObject().(*corev1.ConfigMap).DeepCopy()
			rv++
			cm.ResourceVersion = strconv.Itoa(rv)
			if err := c.Tracker().Create(a.GetResource(), cm, a.GetNamespace()); err != nil {
				return true, nil, err
			}
			return true, cm, nil
		case "update":
			a := a.(k8stesting.UpdateAction)
			cm := a.GetObject().(*corev1.ConfigMap).DeepCopy()
			old, err := c.Tracker().Get(a.GetResource(), a.GetNamespace(), cm.Name)
			if err != nil {
				return true, nil, err
			}
			if cm.ResourceVersion != old.(*corev1.ConfigMap).ResourceVersion {
				return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), cm.Name, errors.New("stale resourceVersion"))
			}
			rv++
			cm.ResourceVersion = strconv.Itoa(rv)
			if err := c.Tracker().Update(a.GetResource(), cm, a.GetNamespace()); err != nil {
				return true, nil, err
			}
			return true, cm, nil
		}
		return false, nil, nil
	})
	return c
}

func newCluster(t *testing.T, c *fake.Clientset, o ClusterOptions) *ClusterStore {
	t.Helper()
	if o.Now == nil {
		o.Now = func() time.Time { return c0 }
	}
	return NewClusterStore(statestore.New(c.CoreV1(), ns), o, zap.NewNop())
}

func event(id string, kind notify.Kind, at time.Time) notify.Event {
	return notify.Event{ID: notify.NewEventID(), Kind: kind, Time: at, IncidentID: id,
		Target: notify.Target{Namespace: "production", Deployment: "pggit-api"}, Trigger: "error-rate", Severity: notify.SeverityCritical,
		Details: notify.Details{Requester: &notify.Requester{Kind: notify.RequestedByAlertmanager, Name: "SecurityRollback",
			At: c0, Fingerprint: "f00", Labels: map[string]string{"alertname": "SecurityRollback", "team": "api"}, Reason: "CVE"}}}
}

// TestClusterRecordsReadableByAnyReplica: a record written through one
// store is what another store (another replica) lists and serves.
func TestClusterRecordsReadableByAnyReplica(t *testing.T) {
	ctx := context.Background()
	c := newFake()
	leader, follower := newCluster(t, c, ClusterOptions{}), newCluster(t, c, ClusterOptions{})
	id := "production_pggit-api_6d5f8c9b7"
	for i, k := range []notify.Kind{notify.KindDetected, notify.KindRollbackStarted, notify.KindRollbackSucceeded} {
		if err := leader.Record(ctx, event(id, k, c0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	a, err := leader.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := follower.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 1 || !reflect.DeepEqual(a, b) || a[0].Status != StatusResolved {
		t.Fatalf("leader lists %+v, follower %+v; want the same one resolved record", a, b)
	}
	r, err := follower.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Requests) != 1 || r.Requests[0].Fingerprint != "f00" || r.Requests[0].Labels["team"] != "api" {
		t.Errorf("requests %+v, want the one alert with its fingerprint and labels", r.Requests)
	}
	cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{LabelState: StateIncident, LabelRecord: "true", LabelIncident: id,
		LabelTargetNamespace: "production", LabelTargetDeployment: "pggit-api", LabelStatus: "resolved", statestore.LabelManagedBy: "rollguard"} {
		if cm.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, cm.Labels[k], want)
		}
	}
	if cm.Annotations[AnnotationIncidentID] != id {
		t.Errorf("annotation %s = %q", AnnotationIncidentID, cm.Annotations[AnnotationIncidentID])
	}

	srv := httptest.NewServer(Handler(follower, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/incidents/" + id + "?format=markdown")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var md strings.Builder
	_, _ = fmt.Fprint(&md, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("markdown: %d", resp.StatusCode)
	}
	got, _ := follower.Markdown(ctx, id)
	if !strings.Contains(string(got), "## Requested by") || !strings.Contains(string(got), "alertmanager SecurityRollback (fingerprint f00)") {
		t.Errorf("markdown lacks the audit trail:\n%s", got)
	}
}

func TestClusterRejectsBadRecords(t *testing.T) {
	ctx := context.Background()
	c := newFake()
	s := newCluster(t, c, ClusterOptions{})

	if err := s.Record(ctx, event("../etc", notify.KindDetected, c0)); !errors.Is(err, ErrInvalidID) {
		t.Errorf("bad id: err = %v, want ErrInvalidID", err)
	}

	// Oversized: a plan of 100,000 steps is over the bound.
	big := event("production_pggit-api_big", notify.KindDetected, c0)
	plan := make([]string, 100000)
	for i := range plan {
		plan[i] = fmt.Sprintf("step-%d", i)
	}
	big.Details.Plan = plan
	err := s.Record(ctx, big)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "incident production_pggit-api_big") {
		t.Errorf("oversized: err = %v, want ErrTooLarge naming the incident", err)
	}
	if _, err := s.Get(ctx, "production_pggit-api_big"); !errors.Is(err, ErrNotFound) {
		t.Errorf("oversized record stored anyway: %v", err)
	}

	// Malformed: a stored record someone edited by hand.
	id := "production_pggit-api_bad"
	if err := s.Record(ctx, event(id, notify.KindDetected, c0)); err != nil {
		t.Fatal(err)
	}
	cm, _ := c.CoreV1().ConfigMaps(ns).Get(ctx, ObjectName(id), metav1.GetOptions{})
	cm.Data[KeyRecord] = `{"id": 12`
	if _, err := c.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s2 := newCluster(t, c, ClusterOptions{}) // no cached copy
	err = s2.Record(ctx, event(id, notify.KindRollbackStarted, c0.Add(time.Second)))
	want := "incident production_pggit-api_bad: configmap rollguard/" + ObjectName(id) + ": record.json: invalid incident record"
	if !errors.Is(err, ErrInvalidRecord) || !strings.Contains(err.Error(), want) {
		t.Errorf("malformed: err = %v, want ErrInvalidRecord containing %q", err, want)
	}
	if _, err := s2.Get(ctx, id); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("Get of a malformed record: %v", err)
	}
	if err := s2.Record(ctx, event("production_pggit-api_ok", notify.KindDetected, c0)); err != nil {
		t.Fatal(err)
	}
	list, err := s2.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "production_pggit-api_ok" {
		t.Errorf("list = %+v, %v; want the readable record only", list, err)
	}
}

func TestBound(t *testing.T) {
	r := &Record{ID: "a_b_c", Target: "a/b", OpenedAt: c0}
	for i := range 1200 {
		r.Timeline = append(r.Timeline, Entry{Time: c0.Add(time.Duration(i) * time.Second), What: fmt.Sprint(i)})
	}
	for i := range 1000 {
		r.Evidence.Samples = append(r.Evidence.Samples, notify.Sample{Time: c0.Add(time.Duration(i) * time.Second), Value: float64(i)})
	}
	for i := range 150 {
		r.Requests = append(r.Requests, notify.Requester{Kind: notify.RequestedByAPI, Name: fmt.Sprint(i), At: c0})
	}
	r.Reason = strings.Repeat("é", MaxText)
	r.Bound()
	if len(r.Timeline) != MaxTimeline || r.Timeline[FirstTimeline-1].What != "99" || r.Timeline[FirstTimeline].What != "800" || r.Timeline[MaxTimeline-1].What != "1199" {
		t.Errorf("timeline kept %d entries: first part ends %q, second starts %q", len(r.Timeline), r.Timeline[FirstTimeline-1].What, r.Timeline[FirstTimeline].What)
	}
	if len(r.Evidence.Samples) != MaxSamples || r.Evidence.Samples[0].Value != 280 {
		t.Errorf("samples kept %d from %v, want the newest %d", len(r.Evidence.Samples), r.Evidence.Samples[0].Value, MaxSamples)
	}
	if len(r.Requests) != MaxRequests || r.Requests[FirstRequests].Name != "60" {
		t.Errorf("requests kept %d", len(r.Requests))
	}
	if len(r.Reason) > MaxText || !strings.HasSuffix(r.Reason, "…") {
		t.Errorf("reason %d bytes", len(r.Reason))
	}
	want := map[string]int{"timeline": 700, "evidence.samples": 280, "requests": 50, "reason.bytes": 1}
	if !reflect.DeepEqual(r.Omitted, want) {
		t.Errorf("omitted %v, want %v", r.Omitted, want)
	}
	if md := Markdown(r, Template{}); !strings.Contains(md, "## Truncated") || !strings.Contains(md, "timeline 700;") {
		t.Error("the report does not say what was cut")
	}
}

// TestClusterOutbox: entries live in their incident's object (or a
// target's notices object), leave it when every notifier is done, and an
// object with neither record nor entries is deleted.
func TestClusterOutbox(t *testing.T) {
	ctx := context.Background()
	c := newFake()
	s := newCluster(t, c, ClusterOptions{})
	inc := event("production_pggit-api_6d5f8c9b7", notify.KindDetected, c0)
	blind := notify.Event{ID: "blind-1", Kind: notify.KindBlind, Time: c0.Add(time.Second), Target: inc.Target, Trigger: "p99"}
	both := map[string]notify.DeliveryState{"pagerduty": notify.StatePending, "slack": notify.StatePending}
	if err := s.Add([]notify.Pending{{Event: inc, Owner: "a", Notifiers: both, Updated: c0}, {Event: blind, Owner: "a", Notifiers: both, Updated: c0}})(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Record(ctx, inc); err != nil {
		t.Fatal(err)
	}
	other := newCluster(t, c, ClusterOptions{})
	ps, err := other.Pending(ctx)
	if err != nil || len(ps) != 2 || ps[0].Event.ID != inc.ID || ps[1].Event.ID != "blind-1" {
		t.Fatalf("pending = %+v, %v", ps, err)
	}
	if r := ps[0].Event.Details.Requester; r == nil || r.Fingerprint != "f00" {
		t.Errorf("stored event lost its typed requester: %#v", ps[0].Event.Details.Requester)
	}
	if err := other.Own(ps, "b")(ctx); err != nil {
		t.Fatal(err)
	}
	var fs []notify.Flush
	for _, e := range []notify.Event{inc, blind} {
		fs = append(fs, s.Mark(e, "slack", notify.StateClaimed), s.Mark(e, "pagerduty", notify.StateDone))
	}
	fs = append(fs, s.Mark(blind, "slack", notify.StateDone))
	if err := all(fs)(ctx); err != nil {
		t.Fatal(err)
	}
	ps, _ = other.Pending(ctx)
	if len(ps) != 1 || ps[0].Owner != "b" || !reflect.DeepEqual(ps[0].Notifiers, map[string]notify.DeliveryState{"slack": notify.StateClaimed}) {
		t.Fatalf("pending = %+v, want the incident's event claimed by slack, owned by b", ps)
	}
	if cm, _ := c.CoreV1().ConfigMaps(ns).Get(ctx, ObjectName(outboxKey(blind)), metav1.GetOptions{}); cm != nil && cm.Name != "" {
		t.Errorf("the notices object outlived its last entry: %v", cm.Data)
	}
	if err := s.Mark(inc, "slack", notify.StateDone)(ctx); err != nil {
		t.Fatal(err)
	}
	cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, ObjectName(inc.IncidentID), metav1.GetOptions{})
	if err != nil || cm.Data[KeyOutbox] != "" || cm.Labels[LabelOutbox] != "" || cm.Data[KeyRecord] == "" {
		t.Errorf("incident object after delivery: %v labels %v, %v; want the record only", cm.Data, cm.Labels, err)
	}
}

// TestClusterCoalescesWrites: changes that arrive while a write is in
// flight go into one next write, in order.
func TestClusterCoalescesWrites(t *testing.T) {
	ctx := context.Background()
	c := newFake()
	s := newCluster(t, c, ClusterOptions{})
	id := "production_pggit-api_6d5f8c9b7"
	var mu sync.Mutex
	var flushes []notify.Flush
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := event(id, notify.KindStepStarted, c0.Add(time.Duration(i)*time.Millisecond))
			e.Details.Step = fmt.Sprintf("s%02d", i)
			f := s.Add([]notify.Pending{{Event: e, Owner: "a", Notifiers: map[string]notify.DeliveryState{"pagerduty": notify.StatePending}}})
			mu.Lock()
			flushes = append(flushes, f)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, f := range flushes {
		if err := f(ctx); err != nil {
			t.Fatal(err)
		}
	}
	writes := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == "update" || a.GetVerb() == "create" {
			writes++
		}
	}
	ps, _ := s.Pending(ctx)
	if len(ps) != 50 {
		t.Fatalf("%d pending, want 50", len(ps))
	}
	if writes >= 50 {
		t.Errorf("%d writes for 50 changes, want them coalesced", writes)
	}
	t.Logf("50 changes in %d writes", writes)
}

func TestClusterPrune(t *testing.T) {
	ctx := context.Background()
	c := newFake()
	now := c0.Add(100 * 24 * time.Hour)
	s := newCluster(t, c, ClusterOptions{MaxRecords: 2, MaxAge: 30 * 24 * time.Hour, Now: func() time.Time { return now }})
	at := map[string]time.Time{
		"ns_d_new": now.Add(-time.Hour), "ns_d_newer": now.Add(-time.Minute), "ns_d_third": now.Add(-2 * time.Hour),
		"ns_d_old": now.Add(-40 * 24 * time.Hour), "ns_d_oldpending": now.Add(-50 * 24 * time.Hour),
	}
	for id, ts := range at {
		if err := s.Record(ctx, event(id, notify.KindDetected, ts)); err != nil {
			t.Fatal(err)
		}
	}
	e := event("ns_d_oldpending", notify.KindDetected, at["ns_d_oldpending"])
	if err := s.Add([]notify.Pending{{Event: e, Owner: "a", Notifiers: map[string]notify.DeliveryState{"pagerduty": notify.StatePending}}})(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want 2 (the third newest and the old one)", n, err)
	}
	list, _ := s.List(ctx)
	var ids []string
	for _, l := range list {
		ids = append(ids, l.ID)
	}
	if want := []string{"ns_d_newer", "ns_d_new", "ns_d_oldpending"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("kept %v, want %v (an object with undelivered pages is kept)", ids, want)
	}
}

// TestRecorderAlarm: a record that cannot be stored pages once (an
// alarm event for the other notifiers) and the error is final.
func TestRecorderAlarm(t *testing.T) {
	ctx := context.Background()
	c := newFake()
	s := newCluster(t, c, ClusterOptions{})
	var alarms []notify.Event
	rec := NewRecorderWith(s, RecorderOptions{Alarm: func(e notify.Event) { alarms = append(alarms, e) }}, zap.NewNop())
	big := event("production_pggit-api_big", notify.KindDetected, c0)
	big.Details.Plan = make([]string, 200000)
	for range 2 {
		err := rec.Notify(ctx, big)
		if err == nil || notify.IsRetryable(err) {
			t.Fatalf("err = %v, want a final error", err)
		}
	}
	if len(alarms) != 1 || alarms[0].Kind != notify.KindRecordFailed || alarms[0].IncidentID != big.IncidentID ||
		!strings.Contains(alarms[0].Summary, "could not store the incident record") {
		t.Fatalf("alarms %+v, want one record_failed", alarms)
	}
	if err := rec.Notify(ctx, alarms[0]); err != nil {
		t.Errorf("the recorder tried to record its own alarm: %v", err)
	}
}
