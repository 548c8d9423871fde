//! CPU time of a harness cluster's processes, from `/proc/<pid>/stat`: the postmaster and its
//! children (backends, walsenders, apply workers, background processes), sampled twice and
//! subtracted. Linux only.
//!
//! A child that exits between two snapshots is accounted through the postmaster's
//! `cutime + cstime` (the kernel adds a reaped child's CPU there), less what it had already
//! used at the first snapshot, so short-lived backends are not lost.

use std::collections::HashMap;
use std::fs;

use anyhow::{Context, Result};

use crate::Cluster;

/// One process's counters, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// utime + stime of the process itself.
    pub ticks: u64,
    /// cutime + cstime: CPU of its children that were waited for.
    pub child_ticks: u64,
    /// Start time since boot; tells a reused pid from the process we saw before.
    pub start: u64,
}

/// Parse `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state) of proc(5); field k is f[k - 3].
    let n = |k: usize| f.get(k - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        ticks: n(14)? + n(15)?,
        child_ticks: n(16)? + n(17)?,
        start: n(22)?,
    })
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The postmaster's pid: the first line of `data/postmaster.pid`.
pub fn postmaster_pid(cluster: &Cluster) -> Result<i32> {
    let path = cluster.dir.join("data/postmaster.pid");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid in {}", path.display()))
}

/// The counters of a postmaster and of all its children at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub postmaster: ProcStat,
    pub children: HashMap<i32, ProcStat>,
}

impl Snapshot {
    pub fn take(postmaster: i32) -> Result<Snapshot> {
        let pm =
            read_stat(postmaster).with_context(|| format!("postmaster {postmaster} is gone"))?;
        let mut children = HashMap::new();
        for e in fs::read_dir("/proc")?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(s) = read_stat(pid) {
                if s.ppid == postmaster {
                    children.insert(pid, s);
                }
            }
        }
        Ok(Snapshot {
            postmaster: pm,
            children,
        })
    }

    pub fn of(cluster: &Cluster) -> Result<Snapshot> {
        Self::take(postmaster_pid(cluster)?)
    }
}

/// CPU seconds used between two snapshots of one cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// Every process of the cluster, the postmaster included.
    pub total: f64,
    /// The processes asked for (e.g. the walsenders), when they lived through both snapshots.
    pub selected: f64,
}

/// Ticks a process used between `a` and `b`, counting a process born in between from zero.
fn delta(a: &Snapshot, s: &ProcStat) -> u64 {
    match a.children.get(&s.pid) {
        Some(old) if old.start == s.start => s.ticks.saturating_sub(old.ticks),
        _ => s.ticks,
    }
}

pub fn cpu_between(a: &Snapshot, b: &Snapshot, selected: &[i32]) -> CpuUse {
    let hz = ticks_per_second();
    let mut total = b.postmaster.ticks.saturating_sub(a.postmaster.ticks);
    // Children reaped in between: their whole life is in cutime; take off what came before `a`.
    let mut reaped = b
        .postmaster
        .child_ticks
        .saturating_sub(a.postmaster.child_ticks);
    for old in a.children.values() {
        let alive = b
            .children
            .get(&old.pid)
            .is_some_and(|s| s.start == old.start);
        if !alive {
            reaped = reaped.saturating_sub(old.ticks);
        }
    }
    total += reaped;
    let mut sel = 0;
    for s in b.children.values() {
        let d = delta(a, s);
        total += d;
        if selected.contains(&s.pid) {
            sel += d;
        }
    }
    CpuUse {
        total: total as f64 / hz,
        selected: sel as f64 / hz,
    }
}

/// Machine-wide CPU counters from the first line of `/proc/stat`, in clock ticks summed over
/// all cores: busy (everything but idle and iowait) and total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineStat {
    pub busy: u64,
    pub total: u64,
}

impl MachineStat {
    pub fn take() -> Result<MachineStat> {
        let text = fs::read_to_string("/proc/stat")?;
        let line = text.lines().next().context("empty /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        anyhow::ensure!(v.len() >= 5, "unexpected /proc/stat line: {line}");
        // user nice system idle iowait irq softirq steal (guest is already inside user)
        let total: u64 = v.iter().take(8).sum();
        Ok(MachineStat {
            busy: total - v[3] - v[4],
            total,
        })
    }

    /// Cores kept busy on average since `earlier` (1.0 = one core fully busy).
    pub fn cores_busy_since(&self, earlier: &MachineStat, cores: usize) -> f64 {
        let total = self.total.saturating_sub(earlier.total) as f64;
        if total == 0.0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total * cores as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_hostile_command_name() {
        let line = "4242 (postgres: a) b (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 30 7 3 20 0 1 0 987654 1000000 200 18446744073709551615";
        let s = parse_stat(4242, line).unwrap();
        assert_eq!(s.ppid, 17);
        assert_eq!(s.ticks, 280);
        assert_eq!(s.child_ticks, 10);
        assert_eq!(s.start, 987654);
    }

    #[test]
    fn reads_our_own_process() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let s = read_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.start > 0);
    }
}
