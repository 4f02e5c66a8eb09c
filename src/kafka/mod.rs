//! Kafka-protocol pieces that carry no wire types: the consumer-group coordinator and the producer-id allocator.
// Until the Kafka listener (the lead's worktree) calls them; remove at the merge.
#![allow(dead_code)]
pub(crate) mod coordinator;
pub(crate) mod group;
pub(crate) mod producer_ids;
