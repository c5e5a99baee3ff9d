//! `market:<symbol>` live trading. The matching engine is pure and deterministic: `order.rs` says what
//! goes in (commands) and comes out (events), `book.rs` is the price-time priority order book of one
//! symbol, `depth.rs` the depth levels and incremental changes streamed to subscribers, `codec.rs` the
//! JSON of order pushes and of what is streamed.

pub mod book;
pub mod codec;
pub mod depth;
pub mod order;

pub use book::{Book, RestingOrder};
pub use order::{
    AccountId, CancelReason, Command, Event, Limits, OrderId, OrderKind, Price, Qty, RejectReason, Side,
    TimeInForce,
};

#[cfg(test)]
mod tests;
