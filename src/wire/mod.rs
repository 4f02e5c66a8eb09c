//! Pure codecs for what arrives on the wire: bytes in, values or errors out.
//!
//! Nothing here does I/O, reads past the slice it is given, panics on
//! hostile input, or allocates in proportion to a length read from that
//! input, which is what lets these modules be fuzzed and benchmarked alone.
//! [`batch`] is Kafka's RecordBatch v2, the unit Strom validates and stores
//! unchanged. The native request/response framing is [`crate::proto`].

pub mod batch;
