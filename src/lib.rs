//! Strom: a durable, append-only log broker and storage engine on io_uring.
//!
//! The tree follows a record's path: a [`server`] connection's codec (or
//! the embedded [`engine`] API) hands a command to the [`broker`], which
//! validates its RecordBatch ([`wire`]) and routes it to the core that owns
//! its partition; [`core`] runs that core's tick, [`log`] frames it into the core's
//! sequential O_DIRECT log and commits it (write, then one fdatasync),
//! [`partition`] indexes it, and reads come back through the same core from
//! its in-memory log buffers or by `READ_FIXED`. [`io`] is the seam between
//! the core and the kernel (io_uring) or a simulated disk; [`buf`] holds the
//! aligned buffers the kernel reads and writes. Each core's rooms count
//! into its [`metrics`] registry.
#![deny(unsafe_code)]

pub mod archive;
pub mod auth;
pub mod broker;
pub mod buf;
pub mod catalog;
pub mod ceiling;
pub mod client;
pub mod config;
pub mod core;
pub mod engine;
pub mod error;
pub mod failpoint;
pub(crate) mod follow;
pub mod franz;
pub mod inspect;
pub mod io;
pub(crate) mod kafka;
#[doc(hidden)]
pub use kafka::fuzz as kafka_fuzz;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod platform;
pub mod proto;
pub mod read;
pub mod server;
pub mod stats;
pub mod wire;

pub use config::{EngineConfig, FsyncPolicy};

/// README.md's Rust blocks, compiled and run as doc-tests (`cargo test
/// --doc`), so the example a newcomer copies first cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use engine::Engine;
pub use error::{Result, StromError};
