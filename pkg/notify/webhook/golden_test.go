package webhook

import (
	"context"
	"flag"
	"net/http/httptest"
	"testing"

	"github.com/rollguard/rollguard/test/notifyfixture"
	rcv "github.com/rollguard/rollguard/test/receiver"
)

var update = flag.Bool("update", false, "rewrite golden files")

// What the webhook posts for each representative event, byte for byte;
// the documented schema accepts every one, so it names every detail.
func TestPayloadGolden(t *testing.T) {
	sch := schema(t)
	rc := rcv.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	n, err := New(Options{Name: "tickets", URL: srv.URL + rcv.GenericWebhookPath})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range notifyfixture.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			if err := n.Notify(context.Background(), c.Event); err != nil {
				t.Fatal(err)
			}
			got := rc.Received(rcv.GenericWebhookPath)
			if len(got) == 0 {
				t.Fatal("nothing posted")
			}
			body := []byte(got[len(got)-1].Body)
			if err := validate(t, sch, body); err != nil {
				t.Errorf("payload does not match the schema: %v", err)
			}
			notifyfixture.Golden(t, c.Name+".json", append(body, '\n'), *update)
		})
	}
}
