#!/usr/bin/env bash
# A real one-node Slurm on this machine, for tests and for trying cluster/airlift.sbatch:
# munged, slurmctld and slurmd with their config, keys, state, logs and PIDs in one folder.
#
#   cluster/local-slurm.sh start DIR    # installs slurm-wlm + munge (Debian) when missing
#   export SLURM_CONF=DIR/slurm.conf    # then sbatch / squeue / scontrol talk to it
#   cluster/local-slurm.sh stop DIR     # stops the three daemons (by PID)
#
# The node declares CPUS (default 8) CPUs whatever the machine has (SlurmdParameters=
# config_overrides), so a 2-core machine can run a job of several tasks. Daemons run as root
# (SlurmUser=root) on loopback ports chosen here. Job credentials expire after 10 s instead of
# 120 s (`cred_expire`), which is also how long Slurm holds a requeued job before it may start.
set -euo pipefail

cmd=${1:?usage: local-slurm.sh start|stop DIR}
DIR=${2:?usage: local-slurm.sh start|stop DIR}
CPUS=${CPUS:-8}

stop() {
  for p in slurmd slurmctld munged; do
    if [ -f "$DIR/$p.pid" ]; then
      pid=$(cat "$DIR/$p.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$DIR/$p.pid"
    fi
  done
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: local-slurm.sh start|stop DIR" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "local-slurm: installing slurm-wlm and munge (Debian packages)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null \
    || { $SUDO apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
fi

DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
stop
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
chmod 700 "$DIR/munge"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port); SLURMD_PORT=$(free_port)
HOST=$(hostname -s)

if [ ! -f "$DIR/munge/munge.key" ]; then
  head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
  chmod 400 "$DIR/munge/munge.key"
fi
munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/munge.seed"

cat > "$DIR/slurm.conf" <<EOF
ClusterName=airlift-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=3600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "local-slurm: up (SLURM_CONF=$SLURM_CONF)" >&2
    exit 0
  fi
  sleep 0.2
done
echo "local-slurm: the node did not come up; logs in $DIR (slurmctld.log, slurmd.log, munged.log)" >&2
sinfo >&2 || true
exit 1
