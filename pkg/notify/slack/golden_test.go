package slack_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/slack"
	"github.com/rollguard/rollguard/test/notifyfixture"
	"github.com/rollguard/rollguard/test/receiver"
)

// The messages Slack gets, byte for byte: for each representative event
// on its own, and for whole incidents, whose final message renders what
// the earlier events said.
func TestMessageGolden(t *testing.T) {
	notifyfixture.Deliver(t, notifyfixture.Runs(), func(url string) (notify.Notifier, error) {
		return slack.New(slack.Options{WebhookURL: url + receiver.SlackWebhookPath, Channel: "#pggit-incidents", Template: incident.Template{
			Impact: "Webhook delivery system", OnCall: "@pggit-oncall", StatusPage: "https://status.pggit.io", StatusURL: "https://rollguard.example"},
			Now: func() time.Time { return notifyfixture.At }}, zap.NewNop())
	}, func(t *testing.T, r notifyfixture.Run, got []receiver.Request) {
		var b strings.Builder
		for _, q := range got {
			b.WriteString(q.Body + "\n")
		}
		notifyfixture.Golden(t, r.Name+".txt", []byte(b.String()))
	})
}
