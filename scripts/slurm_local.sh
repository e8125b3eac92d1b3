#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests and for trying `--executor slurm`.
#
#   scripts/slurm_local.sh up      install slurm-wlm + munge when missing (root + apt), write a
#                                  munge key and slurm.conf, start munged, slurmctld and slurmd,
#                                  wait until `sinfo` shows the node idle; prints `export SLURM_CONF=...`
#   scripts/slurm_local.sh down    stop the three daemons (by the pids they wrote) and forget the jobs
#   scripts/slurm_local.sh status  sinfo of the local cluster
#
# Everything lives under $LMC_SLURM_DIR (default /tmp/lmc-slurm): config, key, state, logs. Nothing
# is written to /etc, so a machine's own Slurm or munge set-up is never touched; the clients
# (sbatch, squeue, srun) find this cluster through SLURM_CONF. The config suits a container:
# no cgroups (proctrack/linuxproc, task/none), no accounting database (so `sacct` answers
# "accounting storage is disabled" and submitit falls back on its result files), SlurmUser root.
# Exit codes: 0 ok, 1 failed (the reason on stderr), 3 cannot install (not root or no apt).
set -euo pipefail

DIR=${LMC_SLURM_DIR:-/tmp/lmc-slurm}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
WAIT_S=${LMC_SLURM_WAIT_S:-60}

say() { echo "[slurm_local] $*" >&2; }

install_packages() {
  command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
    && command -v munged >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "slurm-wlm and munge are not installed and this is not root with apt-get; install them with: apt-get install -y slurm-wlm munge"
    exit 3
  fi
  local t0=$SECONDS
  say "installing slurm-wlm and munge (apt-get)"
  # Debian's maintainer scripts try to start the services; without systemd that fails, so
  # forbid it (policy-rc.d exit 101) for the duration of the install.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; ours=1; fi
  (apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }) \
    || { [ $ours = 1 ] && rm -f $policy; say "apt-get install slurm-wlm munge failed"; exit 3; }
  [ $ours = 1 ] && rm -f $policy
  say "installed in $((SECONDS - t0)) s"
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,munge}
  chmod 700 "$DIR" "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
    chmod 400 "$DIR/munge/munge.key"
  fi
  cat > "$CONF" <<EOF
# Single-node cluster written by scripts/slurm_local.sh; see the comments there.
ClusterName=lmc-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${LMC_SLURMCTLD_PORT:-16817}
SlurmdPort=${LMC_SLURMD_PORT:-16818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_daemons() {
  export SLURM_CONF=$CONF
  if ! pid_alive "$DIR/munge/munged.pid"; then
    # munged refuses to run as root without --force; this cluster's key is private to $DIR.
    munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" \
      --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  fi
  pid_alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
  pid_alive "$DIR/slurmd.pid" || slurmd -f "$CONF" -N "$HOST"
  local t0=$SECONDS state=""
  while [ $((SECONDS - t0)) -lt "$WAIT_S" ]; do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)
    case $state in
      idle*|mix*|alloc*) say "node $HOST is $state after $((SECONDS - t0)) s"; return 0 ;;
      down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  say "node $HOST did not become idle within $WAIT_S s (state: ${state:-no answer}); logs in $DIR/log"
  tail -n 5 "$DIR"/log/*.log >&2 || true
  return 1
}

stop_daemons() {
  local f pid
  # Jobs first: slurmstepd and the job's processes outlive a killed slurmd.
  if pid_alive "$DIR/slurmctld.pid"; then
    SLURM_CONF=$CONF scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    if pid_alive "$f"; then
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  # Job state of this throwaway cluster: the next `up` starts clean.
  rm -rf "$DIR/state" "$DIR/spool"
}

case ${1:-} in
  up)
    t0=$SECONDS
    install_packages
    write_config
    start_daemons || { stop_daemons; exit 1; }
    say "cluster up in $((SECONDS - t0)) s"
    echo "export SLURM_CONF=$CONF"
    ;;
  down) stop_daemons; say "stopped" ;;
  status) SLURM_CONF=$CONF sinfo ;;
  *) echo "usage: $0 up|down|status   (state under \$LMC_SLURM_DIR, default /tmp/lmc-slurm)" >&2; exit 2 ;;
esac
