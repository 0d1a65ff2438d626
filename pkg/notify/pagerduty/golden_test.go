package pagerduty_test

import (
	"context"
	"flag"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/test/notifyfixture"
	"github.com/rollguard/rollguard/test/receiver"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The requests PagerDuty gets for each representative event (alert and
// change events, custom_details included), byte for byte; an event that
// is not paged sends nothing.
func TestRequestGolden(t *testing.T) {
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	for _, c := range notifyfixture.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			rc.Reset()
			n, err := pagerduty.New(pagerduty.Options{Endpoint: srv.URL, RoutingKey: key, SecurityRoutingKey: "RECEIVER-security-key-0123456789ab",
				StatusURL: "https://rollguard.example", Now: func() time.Time { return notifyfixture.At }}, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Notify(context.Background(), c.Event); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, r := range rc.Received("") {
				b.WriteString(r.Method + " " + r.Path + "\n" + r.Body + "\n")
			}
			notifyfixture.Golden(t, c.Name+".txt", []byte(b.String()), *update)
		})
	}
}
