// Package readme checks that the README's package map agrees with the
// code: every package under pkg/ and cmd/ is named in it, and every path
// it names exists.
package readme

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const root = "../.."

// packageMap is the README's "How it works" section, which holds the map.
func packageMap(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## How it works")
	if start < 0 {
		t.Fatal(`README.md: no "## How it works" section`)
	}
	end := strings.Index(s[start+1:], "\n## ")
	if end < 0 {
		t.Fatal(`README.md: the "How it works" section has no end`)
	}
	return s[start : start+1+end]
}

var quoted = regexp.MustCompile("`([^`\n]+)`")

// goPackages lists the directories below dir (relative to the repository)
// that hold Go files.
func goPackages(t *testing.T, dir string) []string {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			rel, err := filepath.Rel(root, filepath.Dir(p))
			if err != nil {
				return err
			}
			seen[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func TestPackageMapNamesEveryPackage(t *testing.T) {
	names := map[string]bool{}
	for _, m := range quoted.FindAllStringSubmatch(packageMap(t), -1) {
		names[m[1]] = true
	}
	for _, dir := range []string{"pkg", "cmd"} {
		for _, p := range goPackages(t, dir) {
			// A sub-package may be listed by its last element after its
			// parent: (`pkg/notify/pagerduty`, `slack`, ...).
			if names[p] || (names[path.Base(p)] && hasSibling(names, p)) {
				continue
			}
			t.Errorf("README.md's package map does not name %s", p)
		}
	}
}

// hasSibling reports whether the map names another package of p's
// parent by its full path, the list a bare name continues.
func hasSibling(names map[string]bool, p string) bool {
	parent := path.Dir(p) + "/"
	for n := range names {
		if strings.HasPrefix(n, parent) && n != p {
			return true
		}
	}
	return false
}

func TestPackageMapPathsExist(t *testing.T) {
	checked := 0
	for _, m := range quoted.FindAllStringSubmatch(packageMap(t), -1) {
		p := m[1]
		if !strings.HasPrefix(p, "pkg/") && !strings.HasPrefix(p, "cmd/") && !strings.HasPrefix(p, "test/") {
			continue
		}
		checked++
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
			t.Errorf("README.md's package map names %s, which does not exist", p)
		}
	}
	if checked == 0 {
		t.Fatal("README.md's package map names no path")
	}
}
