package webhook

import (
	"testing"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/test/notifyfixture"
	rcv "github.com/rollguard/rollguard/test/receiver"
)

// What the webhook posts for each representative event, byte for byte;
// the documented schema accepts every one, so it names every detail.
func TestPayloadGolden(t *testing.T) {
	sch := schema(t)
	notifyfixture.Deliver(t, notifyfixture.Singles(), func(url string) (notify.Notifier, error) {
		return New(Options{Name: "tickets", URL: url + rcv.GenericWebhookPath})
	}, func(t *testing.T, r notifyfixture.Run, got []rcv.Request) {
		if len(got) != 1 {
			t.Fatalf("%d posts, want 1", len(got))
		}
		body := []byte(got[0].Body)
		if err := validate(t, sch, body); err != nil {
			t.Errorf("payload does not match the schema: %v", err)
		}
		notifyfixture.Golden(t, r.Name+".json", append(body, '\n'))
	})
}
