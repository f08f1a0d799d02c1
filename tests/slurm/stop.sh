#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh started (by their pid files); daemons that were
# already running before it (a system MariaDB, munge) are left alone.
#   --purge  also wipe SLURM state, spool, logs and the accounting database (the next cluster
#            starts at job id 1; old jobs in sacct under the same ids would confuse submitit)
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/slurm/stop.sh must run as root" >&2; exit 1; }
STATE_DIR=/run/prunebench-slurm

stop() {  # name pidfile: stop a daemon this harness started and wait until it is gone
  local name=$1 pid
  [ -f "$STATE_DIR/$name" ] || return 0
  rm -f "$STATE_DIR/$name"
  pid=$(cat "$2" 2>/dev/null) && kill "$pid" 2>/dev/null || { echo "$name: not running"; return 0; }
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "$name: stopped (pid $pid)"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  echo "$name: killed -9 (pid $pid)"
}

# cancel what is left, so that no job process outlives slurmd
if [ -f "$STATE_DIR/slurmctld" ] && scontrol ping 2>/dev/null | grep -q UP; then
  ids=$(squeue -h -o %A | sort -u)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    scancel $ids
    for _ in $(seq 50); do [ -z "$(squeue -h)" ] && break; sleep 0.2; done
  fi
fi

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop slurmdbd /run/slurm/slurmdbd.pid
if [ "${1:-}" = "--purge" ]; then
  mysql -uroot -e "DROP DATABASE IF EXISTS slurm_acct_db" 2>/dev/null || true
fi
stop mysqld /run/mysqld/mysqld.pid  # mysqld_safe exits after a clean shutdown
stop munged /run/munge/munged.pid

if [ "${1:-}" = "--purge" ]; then
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
  echo "purged SLURM state, spool, logs and accounting"
fi
