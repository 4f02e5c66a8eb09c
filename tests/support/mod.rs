//! Infrastructure for the tests that need the machine itself: loop-device
//! filesystems (power cuts, disk full, throttling) and a `strom serve` child.
#![allow(dead_code)]
pub mod cgroup;
pub mod loopfs;
pub mod serve;
pub mod workload;
