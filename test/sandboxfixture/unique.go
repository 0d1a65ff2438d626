package sandboxfixture

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/rollguard/rollguard/test/localproc"
)

// RandomHex is n random bytes in hex: the suffix that keeps one test's
// namespaces, database objects, receiver paths and simulator profiles
// apart from every other test's on the shared sandbox.
func RandomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random suffix: %v", err)
	}
	return hex.EncodeToString(b)
}

// FreeAddr is a 127.0.0.1:port nothing listens on right now, for a
// listener the test starts (or for an address that must refuse).
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := localproc.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
