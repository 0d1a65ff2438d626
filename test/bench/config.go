package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// writeToken makes dir and writes a fresh API token into dir/token (the
// tokenFile of a bench config) and returns it.
func writeToken(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	token := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	return token, os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600)
}

// benchGlobal is what global holds in every bench config beside the
// settings a measurement chooses: the sandbox's cluster, interlocks that
// never refuse a bench's rollback, and the bench's namespace for
// rollguard's own objects.
func benchGlobal(env sandboxenv.Env) string {
	return fmt.Sprintf(`  kubernetes: {kubeconfig: %q}
  interlocks: {cooldown: 1m, maxRollbacksPerHour: 100, maxRevisionAge: 1h}
  # rollguard's own namespace (its incident records, its pending pages): the bench's.
  leaderElection: {namespace: %s}
`, env["KUBECONFIG"], benchNamespace)
}

// benchTarget is the head of the one target of a bench config: the bench
// Deployment name, served by the simulator.
func benchTarget(env sandboxenv.Env, name string) string {
	return "targets:\n" + sandboxfixture.SimulatedTarget(env["SIM_URL"], name, benchNamespace, name)
}
