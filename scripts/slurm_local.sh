#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the launcher tests and for trying
# `hydra/launcher=submitit_slurm` before a real cluster. Idempotent: run it as often as you like.
#
#   sudo bash scripts/slurm_local.sh      # installs, configures, starts; exits 0 once the node is idle
#
# What it does (as root): installs Debian's slurmctld slurmd slurm-client munge if missing,
# creates a munge key, starts munged as the munge user, writes a minimal /etc/slurm/slurm.conf
# (one node = this machine, one default partition `debug`, no accounting database), starts
# slurmctld then slurmd, and waits until `sinfo` shows the node idle.
# On failure it prints one line `slurm_local: <reason>` on stderr and exits non-zero; the tests'
# `slurm_cluster` fixture skips with that line.
set -uo pipefail

NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf
LOG=/var/log/slurm
WAIT_S=${SLURM_LOCAL_WAIT_S:-30}

die() { echo "slurm_local: $*" >&2; exit 1; }
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

# Already up (e.g. started by CI before the tests): nothing to do, root or not.
state=$(node_state)
case "$state" in idle|mixed|allocated) echo "slurm_local: node $NODE is up ($state)"; exit 0 ;; esac
[ "$(id -u)" = 0 ] || die "not running and cannot start it: needs root (installs packages, starts daemons)"
command -v flock >/dev/null || die "flock (util-linux) is missing"

# One starter at a time: concurrent test sessions may call this together.
exec 9>/run/slurm_local.lock
flock -w 120 9 || die "another slurm_local.sh held /run/slurm_local.lock for 120 s"

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/tmp/slurm_local.apt.log 2>&1 \
        || die "apt-get update failed (no package mirror?): see /tmp/slurm_local.apt.log"
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        >>/tmp/slurm_local.apt.log 2>&1 \
        || die "apt-get install slurmctld slurmd slurm-client munge failed: see /tmp/slurm_local.apt.log"
fi

# 2. Munge: a key only munge can read, and the daemon running as munge.
install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none || die "cannot write /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force >/dev/null 2>&1 9>&- || die "munged did not start: see /var/log/munge/munged.log"
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munged runs but cannot encode/decode a credential"
fi

# 3. slurm.conf: this machine is the controller and the only node.
cpus=$(nproc)
# Leave the OS a margin: slurmd drains a node whose real memory is below RealMemory.
mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
install -d -m 755 /etc/slurm "$LOG" /var/spool/slurmctld /var/spool/slurmd
new_conf=$(cat <<EOF
# Written by scripts/slurm_local.sh: a single-node cluster for tests. Not for production.
ClusterName=articlegpt
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups (containers rarely allow them): processes tracked by parent id, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# A node that was down comes back by itself once slurmd registers again.
ReturnToService=2
# Jobs may be requeued (submitit requeues preempted/timed-out jobs with scontrol requeue).
JobRequeue=1
# No accounting database: sacct has nothing to report (submitit then warns and reads its own files).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs leave squeue quickly; a killed job gets a short grace period after SIGTERM.
MinJobAge=30
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF" || die "cannot write $CONF"
    conf_changed=1
fi

# 4. Daemons: controller first, then the node daemon.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurmctld.pid && [ $conf_changed = 1 ]; then
    scontrol reconfigure >/dev/null 2>&1 || true
fi
if ! running /run/slurmctld.pid; then
    slurmctld >/dev/null 2>&1 9>&- || die "slurmctld did not start: see $LOG/slurmctld.log"
fi
for _ in $(seq 20); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.25; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld is not answering: see $LOG/slurmctld.log"
if ! running /run/slurmd.pid; then
    slurmd >/dev/null 2>&1 9>&- || die "slurmd did not start: see $LOG/slurmd.log"
fi

# 5. Wait for the node to be idle (resume it once if it came up down or drained).
resumed=0
for _ in $(seq $((WAIT_S * 2))); do
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated) echo "slurm_local: node $NODE is up ($state), partition debug"; exit 0 ;;
        down*|drain*|fail*)
            if [ $resumed = 0 ]; then
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    sleep 0.5
done
reason=$(sinfo -h -N -n "$NODE" -o %E 2>/dev/null | head -n1)
die "node $NODE is '${state:-unknown}' after ${WAIT_S} s${reason:+ (reason: $reason)}: see $LOG/slurmd.log"
