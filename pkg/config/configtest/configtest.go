// Package configtest writes rollguard config files for the tests of the
// commands that read one (backup, preflight): the common target with a
// database, and the file with its secret files beside it.
package configtest

import (
	"os"
	"path/filepath"
	"testing"
)

// DatabaseTarget is the YAML of a targets entry named name for
// production/pggit-api: a connections trigger on the database "primary"
// and a rollback database step with migration, dumpPath and forensicDir.
// extra holds more lines of the rollback database, indented 8 spaces.
func DatabaseTarget(name, migration, dumpPath, forensicDir, extra string) string {
	return `  - name: ` + name + `
    namespace: production
    deployment: pggit-api
    triggers:
      - name: pool
        kind: connections
        database: primary
        above: 0.95
    rollback:
      database:
        name: primary
        migration: ` + migration + `
        dumpPath: ` + dumpPath + `
        forensicDir: ` + forensicDir + `
` + extra
}

// Write writes files (name to content) into dir, then yml as
// dir/rollguard.yaml, and returns that file's path.
func Write(t *testing.T, dir, yml string, files map[string]string) string {
	t.Helper()
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
