# shellcheck shell=bash disable=SC2034 # variables are used by the scripts sourcing this
# Shared helpers for test/sandbox/{up,down,sa-kubeconfig}. Sourced, not run.
#
# Process bookkeeping: every long-running component is started with setsid,
# so its pid is also its process-group id. Its pid file
# ($SANDBOX_STATE/pids/NAME) holds "PID STARTTIME" (STARTTIME from
# /proc/PID/stat) so a recycled pid is never mistaken for ours. Stopping a
# component signals the whole group, so helpers it forked (runuser's child,
# postgres' backends) go with it. Nothing is ever found or killed by name.

SANDBOX_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SANDBOX_REPO=$(cd "$SANDBOX_DIR/../.." && pwd)
# SANDBOX_STATE_DIR moves the state elsewhere (e.g. to try a second sandbox
# beside the shared one); sandboxenv only reads the default location unless
# ROLLGUARD_SANDBOX_ENV points at $SANDBOX_STATE_DIR/env.
SANDBOX_STATE=${SANDBOX_STATE_DIR:-$SANDBOX_DIR/.state}
SANDBOX_LOGS=$SANDBOX_STATE/logs
SANDBOX_PIDS=$SANDBOX_STATE/pids
SANDBOX_ENV_FILE=$SANDBOX_STATE/env

# Start order; down stops in reverse.
SANDBOX_COMPONENTS=(prometheus etcd kube-apiserver kube-controller-manager kube-scheduler kwok pg-primary pg-subscriber receiver pggitsim flux-source flux-kustomize)

sb_now() { printf '%s' "${EPOCHREALTIME/[.,]/}"; } # microseconds

sb_elapsed() { # START_US -> "1.23s"
  local d=$(($(sb_now) - $1))
  printf '%d.%02ds' $((d / 1000000)) $((d % 1000000 / 10000))
}

sb_log() { printf '[sandbox %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

sb_err() { printf '[sandbox %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# sb_proc_start PID: the process's start time in clock ticks since boot, or
# nothing when the process does not exist.
sb_proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  # Field 2 (comm) may contain spaces; everything after the last ')' is
  # fields 3.. so starttime (field 22) is the 20th of those.
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  printf '%s' "${20}"
}

# sb_proc_state PID: the one-letter state (R, S, Z, ...), or nothing.
sb_proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  printf "%s" "${stat%% *}"
}

# sb_proc_pgid PID: the process-group id, or nothing.
sb_proc_pgid() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  printf "%s" "$3"
}

# sb_pid_alive NAME: true when NAME's recorded process is still the one we
# started.
sb_pid_alive() {
  local f=$SANDBOX_PIDS/$1 pid start
  [ -f "$f" ] || return 1
  read -r pid start <"$f" || return 1
  [ -n "$pid" ] && [ -n "$start" ] || return 1
  [ "$(sb_proc_start "$pid")" = "$start" ] || return 1
  # A zombie (exited, not yet reaped by our shell) is not alive.
  [ "$(sb_proc_state "$pid")" != Z ]
}

# sb_group_alive PGID: true while any live process is left in the group.
# Zombies do not count: our orphans are reparented to PID 1, which may take
# seconds to reap them, and kill -0 would still see them.
sb_group_alive() {
  kill -0 -- "-$1" 2>/dev/null || return 1
  local f stat
  for f in /proc/[0-9]*/stat; do
    read -r stat 2>/dev/null <"$f" || continue
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- "$1" $stat
    [ "$4" = "$1" ] && [ "$2" != Z ] && return 0
  done
  return 1
}

# sb_stop NAME: stop the component recorded for NAME. The group leader gets
# the signal (PostgreSQL: SIGINT, a fast shutdown; a smart one would wait for
# clients; the others SIGTERM) so it can shut its children down in order;
# whatever is left of the group after 15 s gets SIGKILL.
sb_stop() {
  local name=$1 f=$SANDBOX_PIDS/$1 pid start sig=TERM i
  [ -f "$f" ] || return 0
  read -r pid start <"$f" || true
  if [ -z "${pid:-}" ] || [ "$(sb_proc_start "$pid")" != "${start:-x}" ]; then
    # The leader is gone or the pid was recycled; stragglers of our group
    # can still exist (the group id stays reserved while any member lives).
    if [ -n "${pid:-}" ] && sb_group_alive "$pid" && [ -z "$(sb_proc_start "$pid")" ]; then
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$f"
    return 0
  fi
  # Children that left the group (PostgreSQL's backends each call setsid)
  # are remembered with their start times, so they can be reaped if the
  # leader has to be killed and leaves them behind.
  local kids=() k
  # shellcheck disable=SC2013 # the file is one line of space-separated pids
  for k in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    kids+=("$k:$(sb_proc_start "$k")")
  done
  case $name in pg-*) sig=INT ;; esac
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    sb_group_alive "$pid" || break
    sleep 0.1
  done
  if sb_group_alive "$pid"; then
    sb_log "$name: still running after 15s, sending SIGKILL to process group $pid"
    kill -KILL -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      sb_group_alive "$pid" || break
      sleep 0.1
    done
  fi
  # Orphaned children notice their parent's death and exit by themselves;
  # give them 5 s, then kill those still running (same pid and start time).
  for k in "${kids[@]}"; do
    for ((i = 0; i < 50; i++)); do
      [ "$(sb_proc_start "${k%%:*}")" = "${k#*:}" ] || break
      sleep 0.1
    done
    if [ "$(sb_proc_start "${k%%:*}")" = "${k#*:}" ]; then
      sb_log "$name: child ${k%%:*} outlived its parent, sending SIGKILL"
      kill -KILL "${k%%:*}" 2>/dev/null || true
    fi
  done
  rm -f "$f"
  sb_log "$name: stopped (pid $pid)"
}

# sb_stop_all: stop every recorded component, last started first.
sb_stop_all() {
  local i
  for ((i = ${#SANDBOX_COMPONENTS[@]} - 1; i >= 0; i--)); do
    sb_stop "${SANDBOX_COMPONENTS[i]}"
  done
  # Pid files of names not in the list (should not happen) are stopped too.
  if [ -d "$SANDBOX_PIDS" ]; then
    local f
    for f in "$SANDBOX_PIDS"/*; do
      [ -e "$f" ] || continue
      sb_stop "$(basename "$f")"
    done
  fi
}

# sb_wipe_state: remove everything but the logs (kept so a failed run can be
# read afterwards; the next up replaces them).
sb_wipe_state() {
  [ -d "$SANDBOX_STATE" ] || return 0
  local p
  for p in "$SANDBOX_STATE"/* "$SANDBOX_STATE"/.[!.]*; do
    [ -e "$p" ] || continue
    case $(basename "$p") in logs | lock | .rollguard-sandbox) continue ;; esac
    rm -rf -- "$p"
  done
}

# sb_lock: serialize up/down/sa-kubeconfig on one state dir.
sb_lock() {
  mkdir -p "$SANDBOX_STATE"
  # The state dir gets wiped: never adopt a directory holding anything else.
  if [ "$SANDBOX_STATE" != "$SANDBOX_DIR/.state" ] && [ ! -e "$SANDBOX_STATE/.rollguard-sandbox" ]; then
    if [ -n "$(ls -A "$SANDBOX_STATE")" ]; then
      sb_err "SANDBOX_STATE_DIR=$SANDBOX_STATE is not empty and not a sandbox state dir; refusing to use it"
      exit 1
    fi
    : >"$SANDBOX_STATE/.rollguard-sandbox"
  fi
  exec 9>"$SANDBOX_STATE/lock"
  if ! flock -w 60 9; then
    sb_err "another test/sandbox/up or down has held $SANDBOX_STATE/lock for 60s"
    exit 1
  fi
}

# sb_load_env: source the env file into the current shell.
sb_load_env() {
  if [ ! -f "$SANDBOX_ENV_FILE" ]; then
    sb_err "sandbox is not up ($SANDBOX_ENV_FILE missing): run test/sandbox/up"
    return 1
  fi
  set -a
  # shellcheck disable=SC1090
  . "$SANDBOX_ENV_FILE"
  set +a
}
