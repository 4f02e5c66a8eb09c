//! CPU time by thread, from /proc/self/task, so loadgen can report its own
//! CPU use apart from an embedded broker's in the same process.
//!
//! The time is the scheduler's own runtime in nanoseconds (the first field
//! of `schedstat`), not `stat`'s utime + stime: those are tick samples
//! rescaled per thread, and were seen to go backwards for a busy thread.
//! The second field is the time the thread spent runnable but waiting for
//! a CPU (the run queue): latency no broker stage and no loadgen clock sees
//! apart, since it falls between a completion and the thread that reaps it.
use std::collections::HashMap;

/// One thread's name, CPU seconds (user + system) and seconds waiting runnable on a run queue.
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes {
    pub name: String,
    pub run_secs: f64,
    pub wait_secs: f64,
}

/// The times of each live thread, by thread id.
pub fn snapshot() -> HashMap<u32, ThreadTimes> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Ok(sched) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
        if let (Some(name), Some((run_secs, wait_secs))) = (parse_name(&stat), parse_schedstat(&sched)) {
            out.insert(tid, ThreadTimes { name, run_secs, wait_secs });
        }
    }
    out
}

/// CPU seconds the calling thread has run, and seconds it waited runnable for a CPU.
pub fn this_thread() -> (f64, f64) {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok().and_then(|l| parse_schedstat(&l)).unwrap_or((0.0, 0.0))
}

/// The thread name from a stat line: in parentheses, and it may itself
/// contain spaces or parentheses, so it ends at the last ')'.
fn parse_name(stat: &str) -> Option<String> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    Some(stat.get(open + 1..close)?.to_string())
}

/// CPU seconds and run-queue seconds from a schedstat line: "run_ns wait_ns timeslices".
fn parse_schedstat(line: &str) -> Option<(f64, f64)> {
    let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok().map(|ns| ns as f64 / 1e9));
    Some((fields.next()??, fields.next()??))
}

/// CPU seconds spent between two snapshots by threads whose name starts
/// with `prefix` (or, with `invert`, by all others).
pub fn spent(before: &HashMap<u32, ThreadTimes>, after: &HashMap<u32, ThreadTimes>, prefix: &str, invert: bool) -> f64 {
    between(before, after, prefix, invert, |t| t.run_secs)
}

/// Seconds those threads spent runnable but waiting for a CPU between two snapshots.
pub fn waited(before: &HashMap<u32, ThreadTimes>, after: &HashMap<u32, ThreadTimes>, prefix: &str, invert: bool) -> f64 {
    between(before, after, prefix, invert, |t| t.wait_secs)
}

fn between(
    before: &HashMap<u32, ThreadTimes>,
    after: &HashMap<u32, ThreadTimes>,
    prefix: &str,
    invert: bool,
    field: impl Fn(&ThreadTimes) -> f64,
) -> f64 {
    after.iter().filter(|(_, t)| t.name.starts_with(prefix) != invert).map(|(tid, t)| field(t) - before.get(tid).map_or(0.0, &field)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the parsers read a name with spaces and parentheses, and runtime in ns.
    #[test]
    fn parses_proc_lines() {
        let line = "1234 (loadgen-w0 (x)) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_name(line), Some("loadgen-w0 (x)".into()));
        assert_eq!(parse_name("garbage"), None);
        assert_eq!(parse_schedstat("2500000000 17000000 3\n"), Some((2.5, 0.017)));
        assert_eq!(parse_schedstat(""), None);
    }

    // Proves a busy thread's CPU time shows up in the snapshot difference.
    #[test]
    fn a_busy_thread_is_counted() {
        let before = snapshot();
        let t = std::thread::Builder::new()
            .name("loadgen-cputest".into())
            .spawn(|| {
                let end = std::time::Instant::now() + std::time::Duration::from_millis(300);
                let mut x = 0u64;
                while std::time::Instant::now() < end {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
                let after = snapshot();
                std::hint::black_box(x);
                after
            })
            .unwrap();
        let after = t.join().unwrap();
        assert!(spent(&before, &after, "loadgen-cputest", false) > 0.05);
    }
}
