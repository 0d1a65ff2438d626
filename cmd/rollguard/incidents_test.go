package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/api/apitest"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
)

// memRecords is an incident.Reader over one record.
type memRecords struct{ r *incident.Record }

func (m memRecords) List(context.Context) ([]incident.Summary, error) {
	return []incident.Summary{{ID: m.r.ID, Target: m.r.Target, Trigger: m.r.Trigger, Severity: string(m.r.Severity), Status: m.r.Status,
		Summary: m.r.Summary, OpenedAt: m.r.OpenedAt, UpdatedAt: m.r.UpdatedAt}}, nil
}

func (m memRecords) Get(_ context.Context, id string) (*incident.Record, error) {
	if id != m.r.ID {
		return nil, incident.ErrNotFound
	}
	return m.r, nil
}

func (m memRecords) Markdown(_ context.Context, id string) ([]byte, error) {
	if id != m.r.ID {
		return nil, incident.ErrNotFound
	}
	return []byte(incident.Markdown(m.r, incident.Template{})), nil
}

// TestIncidentsFromTheDaemon: list, show the report, show the record as
// JSON, and an unknown ID as bad input, through the daemon's API.
func TestIncidentsFromTheDaemon(t *testing.T) {
	at := time.Date(2026, 11, 25, 21, 30, 0, 0, time.UTC)
	rec := &incident.Record{}
	incident.Apply(rec, notify.Event{Kind: notify.KindDetected, Time: at, IncidentID: "production_pggit-api_6d5f8c9b7",
		Target: notify.Target{Namespace: "production", Deployment: "pggit-api"}, Trigger: "error-rate", Summary: "error rate 0.2 above 0.05",
		Details: notify.Details{Requester: &notify.Requester{Kind: notify.RequestedByAPI, Name: "bob", Reason: "CVE", At: at}}})
	srv := httptest.NewServer(api.NewHandler(&apitest.Controller{}, api.Options{Incidents: incident.Handler(memRecords{rec}, nil)}, zap.NewNop()))
	t.Cleanup(srv.Close)

	r := rollguard(t, "incidents", "--api", srv.URL)
	if r.code != exitOK || !strings.Contains(r.stdout, "ID") || !strings.Contains(r.stdout, "production_pggit-api_6d5f8c9b7") ||
		!strings.Contains(r.stdout, "detected") || !strings.Contains(r.stdout, "error rate 0.2 above 0.05") {
		t.Errorf("incidents: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = rollguard(t, "incidents", "show", "production_pggit-api_6d5f8c9b7", "--api", srv.URL)
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "# Incident production_pggit-api_6d5f8c9b7") || !strings.Contains(r.stdout, "| api bob | CVE |") {
		t.Errorf("incidents show: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = rollguard(t, "incidents", "show", "production_pggit-api_6d5f8c9b7", "--api", srv.URL, "-o", "json")
	var got incident.Record
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &got) != nil || got.ID != rec.ID || len(got.Requests) != 1 {
		t.Errorf("incidents show -o json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = rollguard(t, "incidents", "show", "nope", "--api", srv.URL); r.code != exitUsage || !strings.Contains(r.stderr, "404") {
		t.Errorf("incidents show of an unknown id: exit %d, want %d\n%s", r.code, exitUsage, r.stderr)
	}
	if r = rollguard(t, "incidents", "--kubeconfig", "/dev/null"); r.code != exitUsage || !strings.Contains(r.stderr, "go with --config") {
		t.Errorf("--kubeconfig without --config: exit %d, want %d\n%s", r.code, exitUsage, r.stderr)
	}
}
