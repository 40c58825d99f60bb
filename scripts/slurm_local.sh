#!/usr/bin/env bash
# A real SLURM cluster on this machine, for the launcher tests and for trying
# `hydra/launcher=submitit_slurm` before a real cluster. Idempotent: run it as often as you like.
#
#   sudo bash scripts/slurm_local.sh      # installs, configures, starts; exits 0 once node <host> is idle
#   sudo bash scripts/slurm_local.sh two  # ... and once partition `two` has both its nodes idle
#
# Partition `debug` (the default) is this machine as one node, <host>. Partition `two` is two
# more nodes, <host>-1 and <host>-2 with one core each, each served by a slurmd of its own on
# this machine (SLURM's multiple-slurmd support: its own port, and spool, log and pid file named
# by the node, %n). Their names resolve to 127.0.0.1 through /etc/hosts, so a DDP job across them
# finds its rank 0 by node name as on a real cluster.
#
# What it does (as root): installs Debian's slurmctld slurmd slurm-client munge if missing,
# creates a munge key, starts munged as the munge user, writes a minimal /etc/slurm/slurm.conf
# (no accounting database), starts slurmctld then one slurmd per node, and waits until `sinfo`
# shows the nodes idle. On failure it prints one line `slurm_local: <reason>` on stderr and
# exits non-zero; the tests' `slurm_cluster` and `two_nodes` fixtures skip with that line. Where
# the two nodes cannot start, the plain call still succeeds with `debug` alone.
set -uo pipefail

NODE=$(hostname -s)
TWINS=("$NODE-1" "$NODE-2")
WANT=${1:-one}
CONF=/etc/slurm/slurm.conf
LOG=/var/log/slurm
WAIT_S=${SLURM_LOCAL_WAIT_S:-30}

die() { echo "slurm_local: $*" >&2; exit 1; }
node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1; }
up() { case "$(node_state "$1")" in idle|mixed|allocated) return 0 ;; esac; return 1; }
all_up() { local n; for n in "$@"; do up "$n" || return 1; done; }
wanted() { if [ "$WANT" = two ]; then echo "$NODE" "${TWINS[@]}"; else echo "$NODE"; fi; }
report() {
    echo "slurm_local: node $NODE is up ($(node_state "$NODE")), partition debug$(
        [ "$WANT" = two ] && echo "; nodes ${TWINS[*]} are up, partition two")"
}

# Already up (e.g. started by CI before the tests): nothing to do, root or not.
# shellcheck disable=SC2046
if all_up $(wanted); then report; exit 0; fi
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


# 3. slurm.conf: this machine is the controller, node $NODE and the two nodes of partition two.
cpus=$(nproc)
# Leave the OS a margin: slurmd drains a node whose real memory is below RealMemory.
mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
install -d -m 755 /etc/slurm "$LOG" /var/spool/slurmctld /var/spool/slurmd
new_conf=$(cat <<EOF
# Written by scripts/slurm_local.sh: a cluster for tests on one machine. Not for production.
ClusterName=articlegpt
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
# Several slurmd on this machine: a spool, log and pid file for each node (%n).
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
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
NodeName=${TWINS[0]} NodeHostname=$NODE NodeAddr=127.0.0.1 Port=6831 CPUs=1 RealMemory=$((mem_mb / 4)) State=UNKNOWN
NodeName=${TWINS[1]} NodeHostname=$NODE NodeAddr=127.0.0.1 Port=6832 CPUs=1 RealMemory=$((mem_mb / 4)) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=two Nodes=${TWINS[0]},${TWINS[1]} Default=NO MaxTime=INFINITE State=UP
EOF
)
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF" || die "cannot write $CONF"
    conf_changed=1
fi
# A DDP job across two nodes finds its rank 0 by node name (Lightning: MASTER_ADDR from SLURM_NODELIST).
for twin in "${TWINS[@]}"; do
    getent hosts "$twin" >/dev/null || echo "127.0.0.1 $twin  # scripts/slurm_local.sh" >>/etc/hosts \
        || die "cannot add $twin to /etc/hosts"
done

# 4. Daemons: the controller, then a slurmd per node. Nodes added to slurm.conf need the
# controller restarted (reconfigure cannot add them): done once no job is queued or running.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() { running "$1" && kill "$(cat "$1")"; for _ in $(seq 40); do running "$1" || break; sleep 0.25; done; }
if running /run/slurmctld.pid && [ $conf_changed = 1 ]; then
    for _ in $(seq $((WAIT_S * 4))); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
    stop /run/slurmctld.pid
    stop /run/slurmd.pid  # the single slurmd an earlier version of this script started
fi
if ! running /run/slurmctld.pid; then
    slurmctld >/dev/null 2>&1 9>&- || die "slurmctld did not start: see $LOG/slurmctld.log"
fi
for _ in $(seq 20); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.25; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld is not answering: see $LOG/slurmctld.log"
twins=""  # why partition two cannot have its nodes, if it cannot
config=$(scontrol show config 2>/dev/null)  # read whole: grep -q would cut the pipe (pipefail)
grep -Eq '^MULTIPLE_SLURMD +=.*Yes' <<<"$config" \
    || twins="this SLURM build lacks multiple-slurmd support (scontrol show config: MULTIPLE_SLURMD)"
nodes=("$NODE")
[ -z "$twins" ] && nodes+=("${TWINS[@]}")
for node in "${nodes[@]}"; do
    install -d -m 755 "/var/spool/slurmd/$node"
    running "/run/slurmd-$node.pid" || slurmd -N "$node" >/dev/null 2>&1 9>&- || {
        [ "$node" = "$NODE" ] && die "slurmd did not start: see $LOG/slurmd-$node.log"
        twins="slurmd -N $node did not start: see $LOG/slurmd-$node.log"
    }
done
[ "$WANT" = two ] && [ -n "$twins" ] && die "two nodes: $twins"

# 5. Wait for the nodes wanted to be idle (resume each once if it came up down or drained).
# shellcheck disable=SC2046
read -ra nodes <<<"$(wanted)"
declare -A resumed=()
for _ in $(seq $((WAIT_S * 2))); do
    all_up "${nodes[@]}" && { report; exit 0; }
    for node in "${nodes[@]}"; do
        case "$(node_state "$node")" in
            down*|drain*|fail*)
                if [ -z "${resumed[$node]:-}" ]; then
                    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
                    resumed[$node]=1
                fi ;;
        esac
    done
    sleep 0.5
done
for node in "${nodes[@]}"; do
    up "$node" && continue
    reason=$(sinfo -h -N -n "$node" -o %E 2>/dev/null | head -n1)
    die "node $node is '$(node_state "$node")' after ${WAIT_S} s${reason:+ (reason: $reason)}: see $LOG/slurmd-$node.log"
done
report
