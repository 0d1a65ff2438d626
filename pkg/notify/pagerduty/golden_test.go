package pagerduty_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/test/notifyfixture"
	"github.com/rollguard/rollguard/test/receiver"
)

// The requests PagerDuty gets for each representative event (alert and
// change events, custom_details included), byte for byte; an event that
// is not paged sends nothing.
func TestRequestGolden(t *testing.T) {
	notifyfixture.Deliver(t, notifyfixture.Singles(), func(url string) (notify.Notifier, error) {
		return pagerduty.New(pagerduty.Options{Endpoint: url, RoutingKey: key, SecurityRoutingKey: "RECEIVER-security-key-0123456789ab",
			StatusURL: "https://rollguard.example", Now: func() time.Time { return notifyfixture.At }}, zap.NewNop())
	}, func(t *testing.T, r notifyfixture.Run, got []receiver.Request) {
		var b strings.Builder
		for _, q := range got {
			b.WriteString(q.Method + " " + q.Path + "\n" + q.Body + "\n")
		}
		notifyfixture.Golden(t, r.Name+".txt", []byte(b.String()))
	})
}
