package notify_test

import (
	"encoding/json"
	"testing"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/test/notifyfixture"
)

// The event's JSON is what the outbox stores and a next leader delivers:
// its bytes are pinned, and reading them back gives an event that encodes
// to the same bytes.
func TestEventJSONGolden(t *testing.T) {
	for _, c := range notifyfixture.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			b, err := json.Marshal(c.Event)
			if err != nil {
				t.Fatal(err)
			}
			notifyfixture.Golden(t, "event/"+c.Name+".json", append(b, '\n'))
			var back notify.Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			again, err := json.Marshal(back)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(b) {
				t.Errorf("read back and encoded again:\ngot:  %s\nwant: %s", again, b)
			}
		})
	}
}
