//! rusher-loadgen: opens millions of WebSocket connections from many source addresses, drives
//! scenarios against Rusher (or any server speaking the same protocols), and records latency with
//! HdrHistogram, corrected for coordinated omission.
//!
//! Every run has a coordinator and one or more agents talking over TCP (`control`); on one machine the
//! agents are child processes, so a run is not bound by one process's open-file limit.

pub mod agent;
pub mod bets;
pub mod cli;
pub mod control;
pub mod coordinator;
pub mod counters;
pub mod dbsummary;
pub mod engine;
pub mod geo;
pub mod hist;
pub mod phoenix;
pub mod plan;
pub mod results;
pub mod sample;
pub mod sink;
pub mod sources;
pub mod storebench;
pub mod ws;
