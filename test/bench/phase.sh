# shellcheck shell=bash
# Sourced by the bench's runbook scripts: the timing around each runbook
# step, kept out of the steps so that they read as the runbook has them.

step() { # NAME COMMAND...: runs COMMAND, then prints "phase NAME START_EPOCH END_EPOCH"
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$@"
  printf 'phase %s %s %s\n' "$name" "$start" "$(date +%s.%N)"
}
