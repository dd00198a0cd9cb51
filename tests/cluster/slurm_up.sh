#!/usr/bin/env bash
# A single-node Slurm cluster with job accounting, from Debian's packages, for the tests that
# run sweeps and searches against the real scheduler (tests/runs/test_slurm.py): munge, MariaDB,
# slurmdbd, slurmctld and slurmd, started directly (no systemd). Idempotent: running daemons
# are left as they are, but a changed slurm.conf restarts slurmctld and slurmd. Prints
# "slurm: ready" — or "slurm: skipped: <reason>" (exit 0) where it cannot run (not root and no
# sudo, not Debian), which the tests then print as their skip reason.
set -euo pipefail
REASON_FILE="${SLURM_STATUS_FILE:-/tmp/inat-lightning-slurm.status}"
skip() { echo "slurm: skipped: $1" | tee "$REASON_FILE"; exit 0; }

SUDO=""
AS_MUNGE="runuser -u munge --"
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null && SUDO="sudo -n" || skip "not root and no passwordless sudo"
  AS_MUNGE="sudo -n -u munge"
fi
command -v apt-get >/dev/null 2>&1 || skip "not a Debian system (no apt-get)"

PKGS="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
missing=$(for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "slurm: installing $(echo $missing)"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
    || skip "apt-get could not install: $(echo $missing)"
fi

running() { pgrep -x "$1" >/dev/null 2>&1; }
wait_for() {  # wait_for <seconds> <command...>
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))

# munge: the key, then the daemon
$SUDO mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$SUDO chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
$SUDO chmod 0700 /etc/munge /var/log/munge /var/lib/munge
$SUDO chmod 0755 /run/munge
$SUDO chmod 0400 /etc/munge/munge.key
running munged || $AS_MUNGE /usr/sbin/munged
wait_for 10 munge -n || skip "munged did not start"

# MariaDB for slurmdbd
$SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld
if ! running mariadbd && ! running mysqld; then
  $SUDO sh -c 'nohup /usr/bin/mysqld_safe >/var/log/mysqld_safe.log 2>&1 &'
fi
wait_for 30 $SUDO mysqladmin ping || skip "MariaDB did not start"
# slurmdbd's accounting database, and one for Optuna studies (searches run as Slurm jobs share it
# through an SQLAlchemy URL: mysql+pymysql://inat:inat@localhost/inat_optuna)
$SUDO mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  CREATE DATABASE IF NOT EXISTS inat_optuna;
  CREATE USER IF NOT EXISTS 'inat'@'localhost' IDENTIFIED BY 'inat';
  CREATE USER IF NOT EXISTS 'inat'@'127.0.0.1' IDENTIFIED BY 'inat';
  GRANT ALL ON inat_optuna.* TO 'inat'@'localhost';
  GRANT ALL ON inat_optuna.* TO 'inat'@'127.0.0.1'; FLUSH PRIVILEGES;"

# configuration
$SUDO mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm
$SUDO chown -R slurm:slurm /var/lib/slurm /var/log/slurm /run/slurm
$SUDO tee /etc/slurm/slurmdbd.conf >/dev/null <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
$SUDO chown slurm:slurm /etc/slurm/slurmdbd.conf
$SUDO chmod 0600 /etc/slurm/slurmdbd.conf
# cred_expire: a requeued job waits this long before it starts again (default 120 s);
# sched_interval, bf_interval: pending jobs are looked at every 5 s (default 60 and 30 s)
$SUDO tee /etc/slurm/slurm.conf.new >/dev/null <<EOF
ClusterName=inatlocal
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=300
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
if ! $SUDO cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf; then
  $SUDO mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
  for daemon in slurmd slurmctld; do  # running with an older configuration: start them again
    if running "$daemon"; then
      $SUDO pkill -x "$daemon"
      wait_for 20 sh -c "! pgrep -x $daemon" || skip "$daemon did not stop"
    fi
  done
else
  $SUDO rm -f /etc/slurm/slurm.conf.new
fi

running slurmdbd || $SUDO /usr/sbin/slurmdbd
wait_for 30 $SUDO sacctmgr -n list cluster || skip "slurmdbd did not answer"
$SUDO sacctmgr -i add cluster inatlocal >/dev/null 2>&1 || true
running slurmctld || $SUDO /usr/sbin/slurmctld
wait_for 30 scontrol ping || skip "slurmctld did not start"
running slurmd || $SUDO /usr/sbin/slurmd
wait_for 30 sh -c "sinfo -h -o %T | grep -Eq 'idle|mixed|alloc'" || {
  $SUDO scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  wait_for 20 sh -c "sinfo -h -o %T | grep -Eq 'idle|mixed|alloc'" || skip "the node did not come up"
}
echo "slurm: ready ($HOST, $CPUS CPUs, accounting in MariaDB)" | tee "$REASON_FILE"
