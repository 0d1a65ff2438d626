package sandboxfixture

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Queries are the example config's trigger templates, with rate windows
// short enough for the sandbox's 1 s scrape to move them within seconds.
type Queries struct {
	ErrorRate, Volume, LatencyP99 string
}

// ExampleQueries are the example config's queries with rate windows of
// rateWindow (a PromQL duration such as "5s").
func ExampleQueries(rateWindow string) Queries {
	q := Queries{
		ErrorRate:  `(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[W])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[W]))) / sum by (namespace, deployment) (rate(http_requests_total[W]))`,
		Volume:     `sum by (namespace, deployment) (rate(http_requests_total[W]))`,
		LatencyP99: `histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[W])))`,
	}
	r := strings.NewReplacer("[W]", "["+rateWindow+"]")
	return Queries{ErrorRate: r.Replace(q.ErrorRate), Volume: r.Replace(q.Volume), LatencyP99: r.Replace(q.LatencyP99)}
}

// Templates is global.templates of a config using q.
func (q Queries) Templates() map[string]any {
	return map[string]any{
		"errorRate":  map[string]any{"query": q.ErrorRate, "volumeQuery": q.Volume},
		"latencyP99": map[string]any{"query": q.LatencyP99},
	}
}

// YAML is global.templates of a config using q, as the lines of a config
// written as text (indented under global:).
func (q Queries) YAML() string {
	return fmt.Sprintf(`  templates:
    errorRate:
      query: %s
      volumeQuery: %s
    latencyP99:
      query: %s
`, quoted(q.ErrorRate), quoted(q.Volume), quoted(q.LatencyP99))
}

// quoted is s as a YAML double-quoted scalar (a JSON string is one).
func quoted(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a string always marshals
	}
	return string(b)
}

// SimulatedTarget is the head of an entry of targets: in a config written
// as text: the Deployment deployment in namespace, its api container, and
// the simulator at simURL as its health endpoint.
func SimulatedTarget(simURL, name, namespace, deployment string) string {
	return fmt.Sprintf(`  - name: %s
    namespace: %s
    deployment: %s
    containers: [api]
    healthURL: %s/health/%s/%s
`, name, namespace, deployment, simURL, namespace, deployment)
}

// WriteFiles writes each name's content into dir, readable by the owner
// only (they are a config's secret files), and fails the test on error.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
