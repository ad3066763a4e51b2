#!/usr/bin/env bash
# start_slurm.sh - a real single-node SLURM on localhost from Debian packages (bookworm: 22.05).
# The project's copy of ../shared/tools/start_slurm.sh, used by tests/test_slurm.py and .ci/run;
# it adds the `install` mode.
# Idempotent: installs if missing, (re)writes config, starts munged/slurmctld/slurmd
# if not running (restarts slurm daemons if the config changed), returns 0 once the
# node is idle and `srun true` works.  Must run as root.  No systemd needed.
#   start_slurm.sh [start]   install/configure/start (default)
#   start_slurm.sh install   only install the missing packages (CI does this before the tests)
#   start_slurm.sh stop      stop the daemons (slurmd, slurmctld, slurmdbd, mariadbd, munged) by pid file
# Env: SLURM_FAKE_GPUS=N (default 1; 0 = none) fake gres/gpu backed by /dev/null
#      SLURM_PARTITION_NAME (default debug)
#      SLURM_WITH_DBD=1 (default 0) also install MariaDB + slurmdbd, so sacct/sacctmgr
#        work (snakemake plugin's default 'sacct' status command, account check, efficiency report)
set -euo pipefail

FAKE_GPUS=${SLURM_FAKE_GPUS:-1}
PART=${SLURM_PARTITION_NAME:-debug}
WITH_DBD=${SLURM_WITH_DBD:-0}
NODE=$(hostname -s)
ETC=/etc/slurm RUN=/run/slurm SPOOL=/var/spool/slurm LOG=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid CTLD_PID=$RUN/slurmctld.pid SLURMD_PID=$RUN/slurmd.pid
DBD_PID=$RUN/slurmdbd.pid MYSQL_PID=/run/mysqld/mysqld.pid
t0=$EPOCHREALTIME
say() { awk -v a="$t0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN{printf "[start_slurm %5.1fs] %s\n", b-a, m}'; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {   # stop one daemon by its pid file, wait until it is gone
  local f=$1 pid
  alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f"); kill "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
  rm -f "$f"
}

if [ "${1:-start}" = stop ]; then
  stop_pidfile "$SLURMD_PID"; stop_pidfile "$CTLD_PID"; stop_pidfile "$DBD_PID"
  stop_pidfile "$MYSQL_PID"; stop_pidfile "$MUNGE_PID"   # mysqld_safe exits after mariadbd
  echo "slurm stopped"; exit 0
fi

# ---- 1. install (only what is missing) --------------------------------------
pkgs="slurmctld slurmd slurm-client munge"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  say "installing slurm packages"
  export DEBIAN_FRONTEND=noninteractive
  # keep postinst scripts from trying to start services (no systemd here)
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  say "installed $(dpkg-query -W -f='slurmctld ${Version}, munge ' slurmctld)$(dpkg-query -W -f='${Version}' munge)"
fi
if [ "${1:-start}" = install ]; then say "packages present: $pkgs"; exit 0; fi

# ---- 2. munge -------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  runuser -u munge -- mungekey --create
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! alive "$MUNGE_PID"; then
  rm -f "$MUNGE_PID"
  runuser -u munge -- /usr/sbin/munged
  say "munged started (pid $(cat $MUNGE_PID))"
fi
munge -n | unmunge >/dev/null

# ---- 2b. optional accounting: MariaDB + slurmdbd --------------------------------
acct="AccountingStorageType=accounting_storage/none"
if [ "$WITH_DBD" = 1 ]; then
  install -d -m 0755 "$ETC" "$RUN" "$LOG"
  if ! mysqladmin ping >/dev/null 2>&1; then
    /etc/init.d/mariadb start >/dev/null; say "mariadb started"
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  (umask 077; cat > "$ETC/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DBD_PID
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmci
StorageLoc=slurm_acct_db
EOF
  )
  if ! cmp -s "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf"; then
    mv "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf"; stop_pidfile "$DBD_PID"
  else rm -f "$ETC/slurmdbd.conf.new"; fi
  if ! alive "$DBD_PID"; then rm -f "$DBD_PID"; /usr/sbin/slurmdbd; say "slurmdbd started"; fi
  # wait for slurmdbd's port (sacctmgr can't be used yet: slurm.conf may still say 'none')
  for _ in $(seq 1 40); do (echo > /dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.25; done
  acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
fi

# ---- 3. config ------------------------------------------------------------------
install -d -m 0755 "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/d"
# hardware line from slurmd itself; leave ~10% of RAM to the OS
hw=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')
mem=$(awk '/MemTotal/{printf "%d", $2/1024*0.9}' /proc/meminfo)
gres_node="" gres_types=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  gres_node=" Gres=gpu:$FAKE_GPUS" gres_types="GresTypes=gpu"
  # gres File= must be a char/block device: symlinks to /dev/null work (no mknod needed)
  install -d /var/lib/slurm-fakegpu
  for i in $(seq 0 $((FAKE_GPUS - 1))); do ln -sfn /dev/null /var/lib/slurm-fakegpu/gpu$i; done
fi
tmp=$(mktemp -d)
cat > "$tmp/slurm.conf" <<EOF
# generated by start_slurm.sh
ClusterName=localci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# no cgroups: linuxproc tracking, affinity only
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/$([ "$WITH_DBD" = 1 ] && echo linux || echo none)
# without slurmdbd sacct/sacctmgr fail -> snakemake needs --slurm-status-command squeue
$acct
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
MpiDefault=none
MailProg=/bin/true
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 $hw RealMemory=$mem$gres_node State=UNKNOWN
PartitionName=$PART Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
{ echo "AutoDetect=off"
  [ "$FAKE_GPUS" -gt 0 ] && echo "NodeName=$NODE Name=gpu File=/var/lib/slurm-fakegpu/gpu[0-$((FAKE_GPUS - 1))]"
  true; } > "$tmp/gres.conf"
changed=0
for f in slurm.conf gres.conf; do
  if ! cmp -s "$tmp/$f" "$ETC/$f"; then cp "$tmp/$f" "$ETC/$f"; changed=1; fi
done
rm -rf "$tmp"

# ---- 4. daemons -----------------------------------------------------------------
if [ "$changed" = 1 ] && { alive "$CTLD_PID" || alive "$SLURMD_PID"; }; then
  say "config changed: restarting slurm daemons"
  stop_pidfile "$SLURMD_PID"; stop_pidfile "$CTLD_PID"
fi
if ! alive "$CTLD_PID"; then rm -f "$CTLD_PID"; /usr/sbin/slurmctld; say "slurmctld started"; fi
for _ in $(seq 1 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
if ! alive "$SLURMD_PID"; then rm -f "$SLURMD_PID"; /usr/sbin/slurmd; say "slurmd started"; fi

# ---- 5. wait for the node -----------------------------------------------------
state=""
for i in $(seq 1 120); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    *drain*|down*|inval*) [ $((i % 5)) = 1 ] && scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$state" in idle|mixed|allocated|completing) ;; *)
  echo "node $NODE not ready (state '$state')" >&2
  scontrol show node "$NODE" >&2 || true
  tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
  exit 1 ;;
esac
srun --immediate=30 -t 1 -N1 -n1 true
say "slurm ready: node $NODE $state, partition $PART"
sinfo -o '%P %a %l %D %T %N %G'
