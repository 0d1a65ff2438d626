package alertmanager

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var opts = Options{
	Targets:       map[string]bool{"pggit-api": true},
	Actions:       map[string]bool{"rollback": true, "full-rollback": true, "page": true},
	DefaultAction: "rollback",
}

func TestParse(t *testing.T) {
	start := time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)
	tests := []struct {
		name    string
		body    string
		want    *Notification
		wantErr string
	}{
		{
			name: "security alert",
			body: `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"CVE","rollguard_target":"pggit-api","rollguard_action":"full-rollback","rollguard_security":"true"},"annotations":{"summary":"auth bypass"},"startsAt":"2026-11-25T14:35:00Z","fingerprint":"abc"}]}`,
			want: &Notification{Requests: []Request{{Target: "pggit-api", Action: "full-rollback", Security: true, Reason: "alertmanager CVE: auth bypass",
				Fingerprint: "abc", StartsAt: start, AlertName: "CVE",
				Labels: map[string]string{"alertname": "CVE", "rollguard_target": "pggit-api", "rollguard_action": "full-rollback", "rollguard_security": "true"}}}},
		},
		{
			name: "default action, resolved and unlabelled alerts, fingerprint computed when absent",
			body: `{"version":"4","alerts":[{"status":"resolved","labels":{"rollguard_target":"pggit-api"},"fingerprint":"r1"},{"status":"firing","labels":{"alertname":"Other"}},{"status":"firing","labels":{"alertname":"X","rollguard_target":"pggit-api"}}]}`,
			want: &Notification{Resolved: []string{"r1"}, Requests: []Request{{Target: "pggit-api", Action: "rollback", Reason: "alertmanager X",
				AlertName: "X", Fingerprint: "8ac9d7be766eefac", Labels: map[string]string{"alertname": "X", "rollguard_target": "pggit-api"}}}},
		},
		{
			name: "an unknown target or action rejects that alert, not its group",
			body: `{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A","rollguard_target":"kube-system/coredns"},"fingerprint":"f1"},{"status":"firing","labels":{"alertname":"B","rollguard_target":"pggit-api","rollguard_action":"delete"},"fingerprint":"f2"},{"status":"firing","labels":{"alertname":"C","rollguard_target":"pggit-api"},"fingerprint":"f3"}]}`,
			want: &Notification{
				Requests: []Request{{Target: "pggit-api", Action: "rollback", Reason: "alertmanager C", AlertName: "C", Fingerprint: "f3",
					Labels: map[string]string{"alertname": "C", "rollguard_target": "pggit-api"}}},
				Rejected: []Rejected{
					{Index: 0, Target: "kube-system/coredns", Action: "rollback", Fingerprint: "f1", AlertName: "A",
						Labels: map[string]string{"alertname": "A", "rollguard_target": "kube-system/coredns"},
						Err:    errors.New(`alert rejected: alerts[0].labels.rollguard_target "kube-system/coredns": not a configured target`)},
					{Index: 1, Target: "pggit-api", Action: "delete", Fingerprint: "f2", AlertName: "B",
						Labels: map[string]string{"alertname": "B", "rollguard_target": "pggit-api", "rollguard_action": "delete"},
						Err:    errors.New(`alert rejected: alerts[1].labels.rollguard_action "delete": unknown action`)},
				},
			},
		},
		{name: "no alerts", body: `{"version":"4","alerts":[]}`, want: &Notification{}},
		{name: "wrong version", body: `{"version":"3","alerts":[]}`, wantErr: `invalid alertmanager payload: version "3": want "4"`},
		{name: "bad status", body: `{"version":"4","alerts":[{"status":"pending"}]}`,
			wantErr: `invalid alertmanager payload: alerts[0].status "pending": want firing or resolved`},
		{name: "not json", body: `hello`, wantErr: `invalid alertmanager payload: invalid character 'h' looking for beginning of value`},
		{name: "trailing data", body: `{"version":"4"} {}`, wantErr: `invalid alertmanager payload: trailing data after the JSON object`},
		{name: "too large", body: `{"version":"4","x":"` + strings.Repeat("a", MaxBodyBytes) + `"}`,
			wantErr: `invalid alertmanager payload: body larger than 1048576 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.body), opts)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if got != nil {
					t.Fatalf("requests returned with an error: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range got.Rejected {
				if !errors.Is(got.Rejected[i].Err, ErrRejected) || got.Rejected[i].Err.Error() != tt.want.Rejected[i].Err.Error() {
					t.Errorf("rejected[%d].Err = %v, want %v", i, got.Rejected[i].Err, tt.want.Rejected[i].Err)
				}
				got.Rejected[i].Err, tt.want.Rejected[i].Err = nil, nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzParse checks that no payload panics and that whatever is accepted
// names only configured targets and actions.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":"4","alerts":[{"status":"firing","labels":{"rollguard_target":"pggit-api"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := Parse(strings.NewReader(string(b)), opts)
		if err != nil {
			if n != nil {
				t.Fatalf("requests with error %v", err)
			}
			return
		}
		for _, r := range n.Requests {
			if !opts.Targets[r.Target] || !opts.Actions[r.Action] || r.Fingerprint == "" {
				t.Fatalf("accepted %+v", r)
			}
		}
		for _, r := range n.Rejected {
			if opts.Targets[r.Target] && opts.Actions[r.Action] {
				t.Fatalf("rejected a valid alert %+v", r)
			}
		}
	})
}
