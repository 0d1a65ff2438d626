// Package gitops holds integration tests of rollguard on Deployments that
// GitOps controllers reconcile: Flux's real source-controller and
// kustomize-controller (started by test/sandbox/up) reconciling a Git
// repository served on loopback, and Argo CD Applications on the real API
// server (its CRD only: no Argo CD controller runs in the sandbox).
package gitops
