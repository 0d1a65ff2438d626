#!/usr/bin/env bash
# The runbook's Multi-Region Rollback around its Quick Rollback with the
# database step, as an on-call engineer would type it: the baseline make
# bench times rollguard's multi-region plan against.
# kubectl is the sandbox's ($SANDBOX_BIN_DIR, $KUBECONFIG); the PostgreSQL
# clients are $PG_BIN_DIR's: the primary by PGHOST, PGPORT, PGUSER and
# PGDATABASE, the secondary region at SECONDARY_PGPORT on the same host.
#
# usage: multi-region-rollback.sh NAMESPACE DEPLOYMENT IMAGE PRE_DEPLOY_DUMP SUBSCRIPTION PUBLICATION PAUSE_SECONDS
#
# STEP 4 ("re-sync replicas"): after the primary was restored in place its
# publication is a new object, and ALTER SUBSCRIPTION ... ENABLE alone
# leaves the secondary failing on "publication ... does not exist" for good
# (PostgreSQL 15), so the lag of STEP 5 never comes down. What the engineer
# must type instead is the rebuild: disable, detach and drop the
# subscription, drop its slot on the primary, empty the secondary's tables
# and create the subscription again with its initial copy.
# PAUSE_SECONDS replaces the Quick Rollback's `sleep 30` (make bench subtracts
# it); `watch` (every 2 s) is a loop every 100 ms here, like rollguard's.
# Each step prints "phase NAME START_EPOCH END_EPOCH" for the bench's profile.
set -euo pipefail
ns=$1 deploy=$2 image=$3 predeploy=$4 sub=$5 pub=$6 pause=${7:-30}
kubectl="${SANDBOX_BIN_DIR:?SANDBOX_BIN_DIR is not set}/kubectl"
pg="${PG_BIN_DIR:?PG_BIN_DIR is not set}"
secondary() { "$pg/psql" -qAtX -v ON_ERROR_STOP=1 -p "${SECONDARY_PGPORT:?}" "$@"; }
primary() { "$pg/psql" -qAtX -v ON_ERROR_STOP=1 "$@"; }

# step NAME COMMAND... runs one step and prints its phase line.
# shellcheck source=phase.sh
. "$(dirname "${BASH_SOURCE[0]}")/phase.sh"

# STEP 1: Check replication status
step lag-check primary -c "SELECT * FROM pggit.measure_replication_lag();" >/dev/null
# STEP 2: Stop replication on secondary regions
step disable secondary -c "ALTER SUBSCRIPTION $sub DISABLE;"
# STEP 3: Rollback primary region first (Quick Rollback)
#   1. Immediate Stop
step stop "$kubectl" scale deployment "$deploy" --replicas=0 -n "$ns"
#   2. Database Rollback (if needed)
step check-migration primary -c "SELECT version FROM pggit.schema_versions WHERE name = 'phase8_analytics_dashboard';"
step restore "$pg/pg_restore" -d "$PGDATABASE" --clean --if-exists "$predeploy"
step verify-db sh -c 'psql=$1; "$psql" -qAtX -c "SELECT COUNT(*) FROM pggit.alert_delivery_queue;" && "$psql" -qAtX -c "SELECT COUNT(*) FROM pggit.webhook_health_metrics;"' sh "$pg/psql"
#   3. Application Rollback
step application "$kubectl" set image "deployment/$deploy" "api=$image" -n "$ns"
step rollout "$kubectl" rollout status "deployment/$deploy" -n "$ns" --timeout=30s
#   4. Restore Traffic
step ramp "$kubectl" scale deployment "$deploy" --replicas=2 -n "$ns"
sleep "$pause"
step ramp "$kubectl" scale deployment "$deploy" --replicas=4 -n "$ns"
# STEP 4: Once primary stable, re-sync replicas (the rebuild, see above)
conninfo=$(secondary -c "SELECT subconninfo FROM pg_subscription WHERE subname = '$sub';")
tables=$(primary -c "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_publication_tables WHERE pubname = '$pub';")
resync() {
  secondary -c "ALTER SUBSCRIPTION $sub DISABLE;" -c "ALTER SUBSCRIPTION $sub SET (slot_name = NONE);" -c "DROP SUBSCRIPTION $sub;"
  until primary -c "SELECT pg_drop_replication_slot('$sub') FROM pg_replication_slots WHERE slot_name = '$sub';" >/dev/null 2>&1; do sleep 0.1; done
  secondary -c "TRUNCATE TABLE $tables;" -c "CREATE SUBSCRIPTION $sub CONNECTION '$conninfo' PUBLICATION $pub;"
}
step resync resync
# STEP 5: Monitor replication lag, until the copy is done and lag < 1 second
caught_up() {
  [ "$(secondary -c "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = '$sub' AND r.srsubstate <> 'r';")" = 0 ] &&
    [ "$(primary -c "SELECT coalesce(bool_and(coalesce(replay_lag_seconds, 0) < 1 AND link_active), false) FROM pggit.measure_replication_lag() WHERE link_name = '$sub';")" = t ]
}
wait_lag() { until caught_up; do sleep 0.1; done; }
step wait-lag wait_lag
