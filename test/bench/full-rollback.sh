#!/usr/bin/env bash
# The runbook's Full Rollback with Database Recovery as an on-call engineer
# would type it: the baseline make bench times rollguard's full plan
# against. kubectl is the sandbox's ($SANDBOX_BIN_DIR, $KUBECONFIG); the
# PostgreSQL client binaries are $PG_BIN_DIR's, connected by PGHOST, PGPORT,
# PGUSER and PGDATABASE (the runbook's -U postgres -d pggit).
#
# usage: full-rollback.sh NAMESPACE DEPLOYMENT MANIFEST PRE_DEPLOY_DUMP FORENSIC_DUMP HEALTH_URL
#
# Differences from the runbook's text, kept to what runs here:
#   - no upload of the forensic dump to S3 (there is no S3);
#   - STEP 4 restores the custom-format pre-deploy dump the runbook's
#     Pre-Deployment Checklist makes, with the runbook's own pg_restore
#     command (Quick Rollback, Database Rollback): its "psql < .sql" needs a
#     plain-format dump that the checklist never takes;
#   - STEP 6 (replicas) is the multi-region procedure, timed on its own.
# Each step prints "phase NAME START_EPOCH END_EPOCH" for the bench's profile.
set -euo pipefail
ns=$1 deploy=$2 manifest=$3 predeploy=$4 forensic=$5 health=$6
kubectl="${SANDBOX_BIN_DIR:?SANDBOX_BIN_DIR is not set}/kubectl"
pg="${PG_BIN_DIR:?PG_BIN_DIR is not set}"

# step NAME COMMAND... runs one step and prints its phase line.
# shellcheck source=phase.sh
. "$(dirname "${BASH_SOURCE[0]}")/phase.sh"

# STEP 1: Take database offline
step readonly "$kubectl" set env "deployment/$deploy" DB_READONLY=true -n "$ns"
# STEP 2: Backup current state for forensics
step dump sh -c '"$1/pg_dump" -Fc > "$2"' sh "$pg" "$forensic"
# STEP 3: Stop the deployment
step stop "$kubectl" delete deployment "$deploy" -n "$ns"
# STEP 4: Restore database from pre-deployment backup
step restore "$pg/pg_restore" -d "$PGDATABASE" --clean --if-exists "$predeploy"
# STEP 5: Verify database integrity
step verify-db sh -c '"$1/psql" -qAtX -c "SELECT COUNT(*) FROM pggit.alert_delivery_queue;" && "$1/psql" -qAtX -c "SELECT version FROM pggit.schema_versions;"' sh "$pg"
# STEP 7: Deploy stable version
step deploy "$kubectl" create -f "$manifest"
# STEP 8: Verify and restore traffic
step health curl -s -o /dev/null "$health"
