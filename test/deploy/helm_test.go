package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// chartDir is the Helm chart, relative to the repository.
const chartDir = "deploy/helm/rollguard"

// helmOnlyLabels are the labels the chart adds to every object beyond
// deploy/base's (Helm's recommended ones), and helmOnlyAnnotations the
// annotations only Helm reads; the comparison leaves them out.
var (
	helmOnlyLabels      = []string{"app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"}
	helmOnlyAnnotations = []string{"helm.sh/resource-policy"}
)

// helm returns the helm CLI the sandbox built from the Go module proxy
// (HELM_BIN, test/sandbox/build-helm), else one on PATH. On CI a sandbox
// without it is a failure.
func helm(t testing.TB) string {
	t.Helper()
	env, err := sandboxenv.Read(sandboxenv.Path())
	if err == nil && env["HELM_BIN"] != "" {
		return env["HELM_BIN"]
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("no helm: the sandbox env file names no HELM_BIN (test/sandbox/up builds it)")
	}
	t.Skip("no helm to render the chart with: start the sandbox (test/sandbox/up builds it) or put helm on PATH")
	return ""
}

// chartCase is a values set of the chart and the kustomize directory it
// must render the same as.
type chartCase struct {
	name      string
	kustomize string   // directory relative to the repository
	args      []string // helm template flags, paths relative to the repository
}

func chartCases() []chartCase {
	return []chartCase{
		{name: "base", kustomize: "deploy/base"},
		{name: "production", kustomize: "deploy/overlays/production",
			args: []string{"-f", chartDir + "/ci/production-values.yaml", "--set-file", "config=configs/production.yaml"}},
		{name: "staging", kustomize: "deploy/overlays/staging",
			args: []string{"-f", chartDir + "/ci/staging-values.yaml", "--set-file", "config=configs/staging.yaml"}},
	}
}

// helmTemplate renders the chart as release "rollguard" in namespace
// rollguard, from the repository's top directory.
func helmTemplate(t testing.TB, args ...string) ([]*unstructured.Unstructured, string, error) {
	t.Helper()
	full := append([]string{"template", "rollguard", filepath.Join(repoRoot(t), chartDir), "--namespace", installNamespace}, args...)
	cmd := exec.Command(helm(t), full...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return nil, stderr, err
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("decode helm template output: %v\n%s", err, out)
	}
	return objs, "", nil
}

func objKey(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// normalize drops the chart's own labels and annotations and sorts a pod's volumes by name
// (a kustomize patch moves the one it replaces to the front; the API keys
// volumes by name, so their order means nothing), so what remains must
// equal the kustomize rendering.
func normalize(objs []*unstructured.Unstructured) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		c := o.DeepCopy()
		if labels := c.GetLabels(); labels != nil {
			for _, l := range helmOnlyLabels {
				delete(labels, l)
			}
			c.SetLabels(labels)
		}
		if ann := c.GetAnnotations(); ann != nil {
			for _, a := range helmOnlyAnnotations {
				delete(ann, a)
			}
			c.SetAnnotations(ann)
			if len(ann) == 0 {
				unstructured.RemoveNestedField(c.Object, "metadata", "annotations")
			}
		}
		if vols, ok, _ := unstructured.NestedSlice(c.Object, "spec", "template", "spec", "volumes"); ok {
			sort.SliceStable(vols, func(i, j int) bool {
				return fmt.Sprint(vols[i].(map[string]any)["name"]) < fmt.Sprint(vols[j].(map[string]any)["name"])
			})
			_ = unstructured.SetNestedSlice(c.Object, vols, "spec", "template", "spec", "volumes")
		}
		out[objKey(c)] = c.Object
	}
	return out
}

// TestHelmChartMatchesKustomize renders the chart and the kustomize install
// for each variant and compares them object by object: same objects, same
// fields, same defaults (the chart only adds Helm's labels).
func TestHelmChartMatchesKustomize(t *testing.T) {
	for _, tc := range chartCases() {
		t.Run(tc.name, func(t *testing.T) {
			want := normalize(render(t, tc.kustomize))
			objs, stderr, err := helmTemplate(t, tc.args...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, stderr)
			}
			got := normalize(objs)
			var keys []string
			for k := range want {
				keys = append(keys, k)
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				w, inWant := want[k]
				g, inGot := got[k]
				switch {
				case !inGot:
					t.Errorf("%s: rendered by kustomize, not by the chart", k)
				case !inWant:
					t.Errorf("%s: rendered by the chart, not by kustomize", k)
				case !reflect.DeepEqual(w, g):
					wy, _ := yaml.Marshal(w)
					gy, _ := yaml.Marshal(g)
					t.Errorf("%s differs:\nkustomize:\n%s\nchart:\n%s", k, wy, gy)
				}
			}
			if len(want) < 7 {
				t.Errorf("kustomize rendered only %d objects", len(want))
			}
		})
	}
}

// TestHelmLint runs helm lint --strict with the defaults and each ci/
// values set.
func TestHelmLint(t *testing.T) {
	for _, tc := range chartCases() {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", filepath.Join(repoRoot(t), chartDir), "--namespace", installNamespace}, tc.args...)
			cmd := exec.Command(helm(t), args...)
			cmd.Dir = repoRoot(t)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// TestReleaseVersionStamped: the VERSION file is the one place of the
// release version; both installs carry it, and no image is :latest.
func TestReleaseVersionStamped(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(b))
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(v) {
		t.Fatalf("VERSION holds %q, want v<major>.<minor>.<patch>", v)
	}
	var chart struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	cb, err := os.ReadFile(filepath.Join(root, chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(cb, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.AppVersion != v || chart.Version != strings.TrimPrefix(v, "v") {
		t.Errorf("Chart.yaml version %s, appVersion %s; want %s and %s (run make stamp-version)", chart.Version, chart.AppVersion, strings.TrimPrefix(v, "v"), v)
	}
	want := "ghcr.io/rollguard/rollguard:" + v
	images := func(objs []*unstructured.Unstructured) []string {
		var out []string
		for _, d := range ofKind(objs, "Deployment") {
			cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			for _, c := range cs {
				out = append(out, c.(map[string]any)["image"].(string))
			}
		}
		return out
	}
	for _, tc := range chartCases() {
		objs, stderr, err := helmTemplate(t, tc.args...)
		if err != nil {
			t.Fatalf("helm template %s: %v\n%s", tc.name, err, stderr)
		}
		for _, img := range append(images(render(t, tc.kustomize)), images(objs)...) {
			if img != want {
				t.Errorf("%s: image %s, want %s (run make stamp-version)", tc.name, img, want)
			}
		}
	}
}

// TestHelmChartRefusesBadInput: a config the chart's RBAC cannot serve, or
// one that is not YAML, fails the render with a message naming the field.
func TestHelmChartRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		sandboxfixture.WriteFiles(t, dir, map[string]string{name: body})
		return filepath.Join(dir, name)
	}
	for _, tc := range []struct{ name, config, want string }{
		{"lease elsewhere", "global:\n  leaderElection: {enabled: true, namespace: kube-system}\ntargets: []\n",
			`config: global.leaderElection.namespace is "kube-system" but the release namespace is "rollguard"`},
		{"another lease", "global:\n  leaderElection: {enabled: true, leaseName: other}\ntargets: []\n",
			`config: global.leaderElection.leaseName is "other"`},
		{"not YAML", "global: [\n", "config: not YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := helmTemplate(t, "--set-file", "config="+write(tc.name+".yaml", tc.config))
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("helm template: %v, stderr %q; want a failure saying %q", err, stderr, tc.want)
			}
		})
	}
}
