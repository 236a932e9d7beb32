//! What Linux tells about another process (the proxy under test) and our own fd limit.

use std::fs;

/// CPU time and memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak resident set since start or the last clear_refs), KiB.
    pub hwm_kib: u64,
    /// Context switches of all its threads: (voluntary, involuntary). A voluntary one is a
    /// sleep (a pooler blocking in `epoll_wait` with nothing to do), an involuntary one a
    /// preemption. On a host whose cores the pooler shares with PostgreSQL, how often it
    /// sleeps decides much of its CPU per transaction (docs/benchmarks.md).
    pub switches: (u64, u64),
}

/// Reads /proc/PID/stat, /proc/PID/status and each thread's status.
pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    Ok(ProcSample {
        cpu_s: ticks as f64 / clock_ticks_per_second(),
        rss_kib: status_kib(&status, "VmRSS").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM").unwrap_or(0),
        switches: thread_switches(pid),
    })
}

/// (voluntary, involuntary) context switches summed over the threads of `pid`
/// (/proc/PID/status counts only the main thread's).
fn thread_switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .map(|status| switches(&status))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` lines of a status file.
pub fn switches(status: &str) -> (u64, u64) {
    let count = |name| status_number(status, name).unwrap_or(0);
    (
        count("voluntary_ctxt_switches"),
        count("nonvoluntary_ctxt_switches"),
    )
}

/// utime + stime in clock ticks. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   1234 kB` line of /proc/PID/status, in KiB.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status_number(status, name)
}

/// The number that starts the value of a `Name:` line of /proc/PID/status.
fn status_number(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Raises the soft RLIMIT_NOFILE to `want` (and the hard limit too when we are allowed to,
/// i.e. as root); returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads one rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        return lim.rlim_max;
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tpgbouncer\nVmHWM:\t   12345 kB\nVmRSS:\t    9000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS"), Some(9000));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let status =
            "Threads:\t1\nvoluntary_ctxt_switches:\t1500\nnonvoluntary_ctxt_switches:\t27\n";
        assert_eq!(switches(status), (1500, 27));
        assert_eq!(switches("Name:\tx\n"), (0, 0));
    }

    #[test]
    fn samples_ourselves() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = sample(std::process::id()).unwrap();
        assert!(
            later.switches.0 > s.switches.0,
            "a sleep is a voluntary switch"
        );
    }
}
