// Package deploy tests the in-cluster install in deploy/: the kustomize
// overlays render to what the issue asks (least-privilege RBAC, a
// Deployment that meets Pod Security "restricted", the config copied from
// configs/), the PrometheusRule parses, and, on the sandbox, the overlays
// apply server-side and the ServiceAccount can do exactly what rollguard
// needs.
//
// The package has no code of its own; the tests render with kubectl
// (the sandbox's, else the one on PATH) and check rules with promtool.
package deploy
