// Package e2e holds rollguard's end-to-end tests: the daemon (app.Run)
// against the real sandbox (Kubernetes with kwok, the pggit-api simulator,
// Prometheus, PostgreSQL with a logical-replication subscriber, and the
// PagerDuty/Slack receiver). Each test gives its daemon its own namespace,
// listen port, receiver path prefix and image tags, so the tests run in
// parallel without disturbing each other; the two that change shared
// PostgreSQL state (holding every connection slot, disabling the
// subscription) run one after the other and always undo what they did.
//
// It has no non-test code; run it with
//
//	go test -p 1 -count=1 -v ./test/e2e/
//
// after `make sandbox-up` (the env file must carry RECEIVER_URL).
package e2e
