// Package smoke holds the sandbox's end-to-end smoke test: the closed loop
// from a Deployment's image through the simulator and Prometheus to the
// error ratio, and logical replication with its lag. It has no non-test
// code; run it with `go test ./test/smoke/` after `make sandbox-up`.
package smoke
