#!/usr/bin/env bash
# A real Slurm on this machine, for tests and for trying cluster/airlift.sbatch: munged,
# slurmctld and one slurmd per node, with their config, keys, state, logs and PIDs in one folder.
#
#   cluster/local-slurm.sh start DIR            # one node on loopback
#   NODES=3 cluster/local-slurm.sh start DIR    # three hosts: each slurmd in its own network
#                                               # namespace (needs root)
#   export SLURM_CONF=DIR/slurm.conf            # then sbatch / squeue / scontrol talk to it
#   cluster/local-slurm.sh stop DIR             # stops what start made (by PID), deletes the
#                                               # namespaces and the bridge
#
# Faults, for a cluster of several nodes (what the multi-host tests do to a node):
#   cluster/local-slurm.sh link DIR node3 down|up   # the node's only link: a partition
#   cluster/local-slurm.sh kill DIR node3           # every process on the node (slurmd too)
#   cluster/local-slurm.sh revive DIR node3         # starts the node's slurmd again
#
# Installs slurm-wlm + munge (Debian) when missing. Each node declares CPUS (default 8) CPUs
# whatever the machine has (SlurmdParameters=config_overrides), so a 2-core machine can run a job
# of several tasks. Daemons run as root (SlurmUser=root). Job credentials expire after 10 s
# instead of 120 s (`cred_expire`), which is also how long Slurm holds a requeued job before it
# may start again.
#
# Several nodes: a bridge made for this cluster (alb<K>, address 10.77.<K>.254/24 on this host,
# K the first free subnet) joins one namespace per node (airlift-<K>-nodeI, 10.77.<K>.I on its
# `eth0`, its own hostname nodeI through a UTS namespace). slurmctld and munged stay on this host
# (the head: sbatch, squeue and the tests run here); every job step runs inside its node's
# namespace, so a process there sees only its node's address (`AIRLIFT_IFACE=eth0`). Only
# addresses of these namespaces are used; nothing leaves the machine. Files are shared (one file
# system, as a cluster's shared run.dir).
set -euo pipefail

cmd=${1:?usage: local-slurm.sh start|stop|link|kill|revive DIR [NODE [up|down]]}
DIR=${2:?usage: local-slurm.sh start|stop|link|kill|revive DIR [NODE [up|down]]}
CPUS=${CPUS:-8}
NODES=${NODES:-1}
say() { echo "local-slurm: $*" >&2; }

stop_pid() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

# Every process in a node's namespace (slurmd, job steps, their children).
kill_node() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  kill -9 $pids 2>/dev/null || true
  for _ in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
}

stop() {
  for f in "$DIR"/slurmd*.pid "$DIR/slurmctld.pid"; do stop_pid "$f"; done
  if [ -f "$DIR/network" ]; then
    # shellcheck disable=SC1091
    . "$DIR/network"
    for ns in $NAMESPACES; do kill_node "$ns"; ip netns del "$ns" 2>/dev/null || true; done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$DIR/network"
  fi
  stop_pid "$DIR/munged.pid"
}

node_ns() {
  [ -f "$DIR/network" ] || { say "$DIR is not a cluster of several nodes (no $DIR/network)"; exit 2; }
  # shellcheck disable=SC1091
  . "$DIR/network"
  local i=${1#node}
  [[ "$i" =~ ^[0-9]+$ ]] && [ "$i" -ge 1 ] && [ "$i" -le "$NODE_COUNT" ] \
    || { say "no node '$1' in this cluster (node1 .. node$NODE_COUNT)"; exit 2; }
  NS="$PREFIX-node$i"; VETH="alv${K}n$i"
}

start_slurmd() {
  local i=$1
  # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts slurmd reads.
  nsenter --net="/run/netns/$PREFIX-node$i" unshare --uts sh -c "hostname node$i && exec slurmd -f '$DIR/slurm.conf'"
}

DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
case "$cmd" in
  stop) stop; exit 0 ;;
  link)
    node_ns "${3:?usage: local-slurm.sh link DIR NODE up|down}"
    state=${4:?usage: local-slurm.sh link DIR NODE up|down}
    [ "$state" = up ] || [ "$state" = down ] || { say "link: expected up or down, got '$state'"; exit 2; }
    ip link set "$VETH" "$state"
    say "node ${3#node} link $state"; exit 0 ;;
  kill)
    node_ns "${3:?usage: local-slurm.sh kill DIR NODE}"
    kill_node "$NS"; rm -f "$DIR/slurmd-$3.pid"
    say "$3: every process killed"; exit 0 ;;
  revive)
    node_ns "${3:?usage: local-slurm.sh revive DIR NODE}"
    export SLURM_CONF="$DIR/slurm.conf"
    start_slurmd "${3#node}"
    scontrol update nodename="$3" state=resume 2>/dev/null || true
    say "$3: slurmd started again"; exit 0 ;;
  start) ;;
  *) say "usage: local-slurm.sh start|stop|link|kill|revive DIR [NODE [up|down]]"; exit 2 ;;
esac
[[ "$NODES" =~ ^[0-9]+$ ]] && [ "$NODES" -ge 1 ] && [ "$NODES" -le 200 ] || { say "NODES must be 1 to 200, got '$NODES'"; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (Debian packages)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null \
    || { $SUDO apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
fi

stop
rm -f "$DIR"/slurmd*.log
mkdir -p "$DIR/state" "$DIR/munge"
chmod 700 "$DIR/munge"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port); SLURMD_PORT=$(free_port)
HOST=$(hostname -s)

if [ ! -f "$DIR/munge/munge.key" ]; then
  head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
  chmod 400 "$DIR/munge/munge.key"
fi
munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/munge.seed"

if [ "$NODES" = 1 ]; then
  CTLD_ADDR=127.0.0.1
  NODE_LINES="NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4000 State=UNKNOWN"
  mkdir -p "$DIR/spool"
  SPOOL="$DIR/spool"; SLURMD_PID="$DIR/slurmd.pid"; SLURMD_LOG="$DIR/slurmd.log"
else
  [ "$(id -u)" = 0 ] || { say "a cluster of several nodes needs root (network namespaces)"; exit 1; }
  # The first 10.77.K.0/24 no interface of this machine uses.
  K=""
  for k in $(seq 0 250); do
    if ! ip -4 -o addr | grep -q " 10\.77\.$k\." && ! ip link show "alb$k" >/dev/null 2>&1; then K=$k; break; fi
  done
  [ -n "$K" ] || { say "no free subnet 10.77.K.0/24 (K = 0 .. 250)"; exit 1; }
  BRIDGE="alb$K"; PREFIX="airlift-$K"; NAMESPACES=""
  for i in $(seq "$NODES"); do NAMESPACES="$NAMESPACES $PREFIX-node$i"; done
  # Written first, so that stop removes whatever of it was made.
  printf 'K=%s\nBRIDGE=%s\nPREFIX=%s\nNODE_COUNT=%s\nNAMESPACES="%s"\n' "$K" "$BRIDGE" "$PREFIX" "$NODES" "$NAMESPACES" > "$DIR/network"
  ip link add "$BRIDGE" type bridge
  ip addr add "10.77.$K.254/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  NODE_LINES=""
  for i in $(seq "$NODES"); do
    ns="$PREFIX-node$i"
    ip netns add "$ns"
    ip link add "alv${K}n$i" type veth peer name eth0 netns "$ns"
    ip link set "alv${K}n$i" master "$BRIDGE" up
    ip -n "$ns" addr add "10.77.$K.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    NODE_LINES="${NODE_LINES}NodeName=node$i NodeAddr=10.77.$K.$i CPUs=$CPUS RealMemory=4000 State=UNKNOWN"$'\n'
    mkdir -p "$DIR/spool-node$i"
  done
  CTLD_ADDR="10.77.$K.254"
  SPOOL="$DIR/spool-%n"; SLURMD_PID="$DIR/slurmd-%n.pid"; SLURMD_LOG="$DIR/slurmd-%n.log"
fi

cat > "$DIR/slurm.conf" <<EOF
ClusterName=airlift-local
SlurmctldHost=$HOST($CTLD_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$SLURMD_LOG
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
SlurmdTimeout=${SLURMD_TIMEOUT:-300}
$NODE_LINES
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF"
if [ "$NODES" = 1 ]; then
  slurmd -f "$SLURM_CONF"
else
  for i in $(seq "$NODES"); do start_slurmd "$i"; done
fi
for _ in $(seq 150); do
  up=$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated)' || true)
  if [ "$up" -ge "$NODES" ]; then
    if [ "$NODES" = 1 ]; then say "up (SLURM_CONF=$SLURM_CONF)"; else say "up: $NODES nodes on 10.77.$K.0/24 (SLURM_CONF=$SLURM_CONF)"; fi
    exit 0
  fi
  sleep 0.2
done
say "$((NODES - up)) of $NODES nodes did not come up; logs in $DIR (slurmctld.log, slurmd*.log, munged.log)"
sinfo -N >&2 || true
exit 1
