package alertmanager

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rollguard/rollguard/test/notifyfixture"
)

// The alert sent for each representative event; its description is the
// details one fact a line.
func TestAlertGolden(t *testing.T) {
	for _, c := range notifyfixture.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			n, err := New(Options{URLs: []string{"http://alertmanager:9093"}, StatusURL: "https://rollguard.example",
				Now: func() time.Time { return notifyfixture.At }})
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.MarshalIndent(n.Alert(c.Event), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			notifyfixture.Golden(t, c.Name+".json", append(b, '\n'))
		})
	}
}
