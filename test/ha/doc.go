// Package ha holds rollguard's high-availability and safety integration
// tests: the real daemon binary, run as one or two processes against the
// sandbox (Kubernetes with kwok, Prometheus, the pggit-api simulator and
// the PagerDuty receiver), killed, restarted and reloaded while it acts.
//
// Every test has its own namespace, Deployment and receiver path prefix,
// so the tests run in parallel. Run them one package at a time:
//
//	go test -p 1 -count=1 ./test/ha/
//
// They skip when the sandbox is not up (test/sandbox/up) and CI is unset.
package ha
