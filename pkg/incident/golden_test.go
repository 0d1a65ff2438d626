package incident

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/test/notifyfixture"
)

// The incident record as the store writes it (JSON and Markdown), folded
// from each representative event on its own and from whole incidents.
func TestRecordGolden(t *testing.T) {
	tmpl := Template{Impact: "Webhook delivery system", OnCall: "@pggit-oncall", StatusPage: "https://status.pggit.io",
		EmailTo: []string{"oncall@pggit.io"}, StatusURL: "https://rollguard.example"}
	for _, run := range notifyfixture.Runs() {
		if e := run.Events[0]; e.IncidentID == "" || e.Kind == notify.KindTest || e.Kind == notify.KindRecordFailed {
			// The recorder keeps no record of these.
			continue
		}
		t.Run(run.Name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := NewStore(dir, tmpl)
			if err != nil {
				t.Fatal(err)
			}
			r := &Record{}
			for _, e := range run.Events {
				Apply(r, e)
			}
			if err := s.Put(r); err != nil {
				t.Fatal(err)
			}
			for _, ext := range []string{".json", ".md"} {
				b, err := os.ReadFile(filepath.Join(dir, r.ID+ext))
				if err != nil {
					t.Fatal(err)
				}
				notifyfixture.Golden(t, run.Name+ext, b)
			}
		})
	}
}
