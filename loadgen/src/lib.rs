//! rusher-loadgen: opens millions of WebSocket connections from many source addresses, drives
//! scenarios against Rusher (or any server speaking the same protocols), and records latency with
//! HdrHistogram, corrected for coordinated omission.

pub mod plan;
pub mod sources;
pub mod ws;
