//! Which core owns a partition: the routing rule, written once.
//!
//! Partition `pid` lives in log `pid % log_count`, and log `l` is owned by
//! core `l % cores`. The number of logs is fixed when the data directory is
//! created, so a partition keeps its log whatever the number of cores;
//! restarting with another core count only moves whole logs between cores.
use crate::catalog::TopicMeta;
use crate::partition::Pid;

/// The placement of partitions on logs and of logs on cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Router {
    log_count: u32,
    cores: usize,
}

impl Router {
    pub fn new(log_count: u32, cores: usize) -> Router {
        assert!(log_count >= 1 && cores >= 1, "a router needs a log and a core");
        Router { log_count, cores }
    }

    pub fn log_count(&self) -> u32 {
        self.log_count
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The log holding partition `pid`.
    pub fn log_of(&self, pid: Pid) -> u32 {
        crate::partition::log_of(pid, self.log_count)
    }

    /// The core that owns log `log`.
    pub fn core_of_log(&self, log: u32) -> usize {
        log as usize % self.cores
    }

    /// The core that owns partition `pid`.
    pub fn core_of(&self, pid: Pid) -> usize {
        self.core_of_log(self.log_of(pid))
    }

    /// The logs core `core` owns, in order.
    pub fn logs_of(&self, core: usize) -> Vec<u32> {
        (0..self.log_count).filter(|&l| self.core_of_log(l) == core).collect()
    }

    /// The core of each partition of a topic, in partition order.
    pub fn partition_cores(&self, topic: &TopicMeta) -> Vec<u16> {
        (0..topic.partitions).map(|i| self.core_of(topic.first_pid + i) as u16).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the rule is log = pid % logs, core = log % cores, and a core's
    // logs are exactly those that map to it.
    #[test]
    fn partitions_go_to_their_logs_core() {
        let r = Router::new(6, 4);
        assert_eq!((r.log_of(13), r.core_of(13)), (1, 1));
        assert_eq!((r.log_of(10), r.core_of(10)), (4, 0));
        assert_eq!(r.logs_of(0), vec![0, 4]);
        assert_eq!(r.logs_of(3), vec![3]);
        let t = TopicMeta { first_pid: 4, partitions: 3, retention: Default::default(), indices: Vec::new().into() };
        assert_eq!(r.partition_cores(&t), vec![0, 1, 0]);
    }
}
