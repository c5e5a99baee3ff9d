//! What goes into a matching engine and what comes out: commands, events and their reasons.
//!
//! Everything is an integer: prices in ticks, quantities in lots, accounts and orders by number. The
//! topic layer converts user names and JSON into these; the engine never sees text or a clock.

/// A price in ticks of the symbol (always `1..=limits.max_price` once accepted).
pub type Price = u64;
/// A quantity in lots of the symbol (always `1..=limits.max_qty` once accepted).
pub type Qty = u64;
/// An order's number, given by the book in acceptance order from 1; never reused.
pub type OrderId = u64;
/// Who places and owns orders; the topic layer maps users to these.
pub type AccountId = u64;

/// Which side of the book an order is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Wants to buy; rests among the bids.
    Buy,
    /// Wants to sell; rests among the asks.
    Sell,
}

impl Side {
    /// The side an order of this side trades against.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Whether an order of this side with limit `limit` may trade at `resting` (a price on the other side).
    pub fn crosses(self, limit: Price, resting: Price) -> bool {
        match self {
            Side::Buy => resting <= limit,
            Side::Sell => resting >= limit,
        }
    }
}

/// How long the unfilled part of a limit order lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    /// Good till cancelled: the remainder rests on the book.
    Gtc,
    /// Immediate or cancel: trade what crosses now, cancel the remainder.
    Ioc,
}

/// The kind of a new order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKind {
    /// Trade at `price` or better; the remainder follows `tif`.
    Limit { price: Price, tif: TimeInForce },
    /// Trade at any price against what rests now; never rests (the remainder is cancelled).
    Market,
}

/// One instruction to a book. A command the book accepts is what the topic layer stores: replaying the
/// accepted commands in order into an empty book rebuilds it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Place a new order for `account`.
    Place { account: AccountId, side: Side, kind: OrderKind, qty: Qty },
    /// Cancel the resting remainder of `order`, which must belong to `account`.
    Cancel { account: AccountId, order: OrderId },
}

impl Command {
    /// The account that sent the command.
    pub fn account(&self) -> AccountId {
        match *self {
            Command::Place { account, .. } | Command::Cancel { account, .. } => account,
        }
    }
}

/// Why a command was refused. A refused command changes nothing, not even the next order id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The quantity is zero.
    ZeroQuantity,
    /// The quantity is above the book's `max_qty`.
    QuantityTooLarge,
    /// The limit price is zero.
    ZeroPrice,
    /// The limit price is above the book's `max_price`.
    PriceTooHigh,
    /// A limit order that could rest, and the book already holds `max_orders` resting orders.
    BookFull,
    /// A cancel for an order that is not resting (never existed, filled or already cancelled).
    UnknownOrder,
    /// A cancel for another account's order.
    NotOwner,
}

impl RejectReason {
    /// A short, stable description for error replies.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::ZeroQuantity => "quantity must be at least 1",
            RejectReason::QuantityTooLarge => "quantity too large",
            RejectReason::ZeroPrice => "price must be at least 1 tick",
            RejectReason::PriceTooHigh => "price too high",
            RejectReason::BookFull => "order book full",
            RejectReason::UnknownOrder => "unknown order",
            RejectReason::NotOwner => "not your order",
        }
    }
}

/// Why quantity left the book without trading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The owner asked.
    Requested,
    /// The remainder of an IOC or market order that found nothing more to trade with.
    Unfilled,
    /// A resting order met an incoming order of the same account (self-trade prevention: the resting
    /// order is cancelled, the incoming one goes on matching).
    SelfTrade,
}

impl CancelReason {
    /// A short, stable name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::Unfilled => "unfilled",
            CancelReason::SelfTrade => "self_trade",
        }
    }
}

/// What a command did, in the order it happened. Every accepted order gets exactly one `Accepted`
/// and, once nothing of it is left on the book, exactly one `Done`; in between, any number of `Trade`s
/// and at most one `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new order was accepted and given `order`.
    Accepted { order: OrderId, account: AccountId, side: Side, kind: OrderKind, qty: Qty },
    /// The command was refused; nothing changed.
    Rejected { account: AccountId, reason: RejectReason },
    /// `qty` traded at `price`, the resting (maker) order's price.
    Trade {
        maker: OrderId,
        maker_account: AccountId,
        taker: OrderId,
        taker_account: AccountId,
        /// The taker's side: `Buy` means the trade lifted an ask.
        taker_side: Side,
        price: Price,
        qty: Qty,
    },
    /// `qty`, the whole unfilled remainder of `order`, was removed without trading.
    Cancelled { order: OrderId, account: AccountId, qty: Qty, reason: CancelReason },
    /// Nothing of `order` is left: it was filled or cancelled. `filled` is its total traded quantity.
    Done { order: OrderId, account: AccountId, filled: Qty },
}

/// A book's bounds. Chosen so that any `price × qty` fits an `i64` with room to sum many of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Highest price in ticks.
    pub max_price: Price,
    /// Largest quantity of one order.
    pub max_qty: Qty,
    /// Most resting orders the book holds; a limit order that could rest beyond this is refused.
    pub max_orders: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_price: 1_000_000_000, max_qty: 1_000_000_000, max_orders: 1_000_000 }
    }
}
