//! The standard `process_*` figures of this process, from Linux's `/proc`
//! (elsewhere they are absent, not zero).

/// What could be read; `None` where `/proc` has no answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub threads: Option<f64>,
    pub start_time_s: Option<f64>,
}

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`): 100 on every
/// Linux architecture tokenwatch builds for.
const TICKS_PER_S: f64 = 100.0;

pub fn read() -> Process {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which may hold spaces: ")" ends it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // stat(5) numbers fields from 1 with the pid; `fields[0]` is field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let boot_s = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    Process {
        cpu_seconds: field(14).zip(field(15)).map(|(u, s)| (u + s) / TICKS_PER_S),
        resident_bytes: status_kb("VmRSS:").map(|kb| kb * 1024.0),
        virtual_bytes: status_kb("VmSize:").map(|kb| kb * 1024.0),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
        max_fds,
        threads: status_kb("Threads:"),
        start_time_s: field(22)
            .zip(boot_s)
            .map(|(ticks, boot)| boot + ticks / TICKS_PER_S),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_sensibly() {
        let p = read();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_s.expect("start time");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "{p:?}");
        assert!(p.resident_bytes.unwrap() > 1e6, "{p:?}");
        assert!(
            p.virtual_bytes.unwrap() >= p.resident_bytes.unwrap(),
            "{p:?}"
        );
        assert!(p.threads.unwrap() >= 1.0, "{p:?}");
        let fds = p.open_fds.unwrap();
        assert!(fds >= 3.0 && fds <= p.max_fds.unwrap(), "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0, "{p:?}");
    }
}
