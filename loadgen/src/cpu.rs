//! CPU time by thread, from /proc/self/task, so loadgen can report its own
//! CPU use apart from an embedded broker's in the same process.
use std::collections::HashMap;

/// /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 for
/// userspace whatever the kernel's own tick rate.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) of each live thread, by thread id, with its name.
pub fn snapshot() -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some(t) = parse_stat(&stat) {
            out.insert(tid, t);
        }
    }
    out
}

/// (name, cpu seconds) from one /proc/PID/task/TID/stat line. The name is
/// in parentheses and may itself contain spaces or parentheses, so the
/// fields are counted from the last ')'.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / TICKS_PER_SEC))
}

/// CPU seconds spent between two snapshots by threads whose name starts
/// with `prefix` (or, with `invert`, by all others).
pub fn spent(before: &HashMap<u32, (String, f64)>, after: &HashMap<u32, (String, f64)>, prefix: &str, invert: bool) -> f64 {
    after
        .iter()
        .filter(|(_, (name, _))| name.starts_with(prefix) != invert)
        .map(|(tid, (_, secs))| secs - before.get(tid).map_or(0.0, |b| b.1))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the stat parser reads utime+stime even when the name has spaces and parentheses.
    #[test]
    fn parses_stat_lines() {
        let line = "1234 (loadgen-w0 (x)) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("loadgen-w0 (x)".into(), 3.0)));
        assert_eq!(parse_stat("garbage"), None);
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
