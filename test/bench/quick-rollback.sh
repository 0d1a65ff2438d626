#!/usr/bin/env bash
# The runbook's Quick Rollback (phase8-rollback-runbook.md, "Quick Rollback"
# steps 1, 3 and 4; no database step) as an on-call engineer would type it:
# the baseline make bench times rollguard's quick and revert plans against.
# kubectl is the sandbox's ($SANDBOX_BIN_DIR/kubectl, $KUBECONFIG).
#
# usage: quick-rollback.sh NAMESPACE DEPLOYMENT IMAGE [PAUSE_SECONDS]
# PAUSE_SECONDS replaces the runbook's `sleep 30` (make bench subtracts it).
set -euo pipefail
ns=$1 deploy=$2 image=$3 pause=${4:-30}
kubectl="${SANDBOX_BIN_DIR:?SANDBOX_BIN_DIR is not set}/kubectl"

# 1. Immediate Stop
"$kubectl" scale deployment "$deploy" --replicas=0 -n "$ns"
# 3. Application Rollback
"$kubectl" set image "deployment/$deploy" "api=$image" -n "$ns"
"$kubectl" rollout status "deployment/$deploy" -n "$ns" --timeout=30s
# 4. Restore Traffic
"$kubectl" scale deployment "$deploy" --replicas=2 -n "$ns"
sleep "$pause"
"$kubectl" scale deployment "$deploy" --replicas=4 -n "$ns"
