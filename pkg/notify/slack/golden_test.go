package slack_test

import (
	"context"
	"flag"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify/slack"
	"github.com/rollguard/rollguard/test/notifyfixture"
	"github.com/rollguard/rollguard/test/receiver"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The messages Slack gets, byte for byte: for each representative event
// on its own, and for whole incidents, whose final message renders what
// the earlier events said.
func TestMessageGolden(t *testing.T) {
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	for _, r := range notifyfixture.Runs() {
		t.Run(r.Name, func(t *testing.T) {
			rc.Reset()
			n, err := slack.New(slack.Options{WebhookURL: srv.URL + receiver.SlackWebhookPath, Channel: "#pggit-incidents", Template: incident.Template{
				Impact: "Webhook delivery system", OnCall: "@pggit-oncall", StatusPage: "https://status.pggit.io", StatusURL: "https://rollguard.example"},
				Now: func() time.Time { return notifyfixture.At }}, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range r.Events {
				if err := n.Notify(context.Background(), e); err != nil {
					t.Fatalf("%s: %v", e.Kind, err)
				}
			}
			var b strings.Builder
			for _, q := range rc.Received(receiver.SlackWebhookPath) {
				b.WriteString(q.Body + "\n")
			}
			notifyfixture.Golden(t, r.Name+".txt", []byte(b.String()), *update)
		})
	}
}
