//! Market data on the wire: order and cancel pushes decoded from JSON, with a clear error for every
//! bad field, and the engine's events and depth encoded as JSON payloads, public (trades, depth) or for
//! the account concerned (its orders and fills).
//!
//! Pushes (prices in ticks, quantities in lots, both JSON integers):
//! - `order`: `{"side": "buy"|"sell", "type": "limit"|"market", "price": 101, "qty": 5, "tif": "gtc"|"ioc"}`;
//!   `type` defaults to `limit` and `tif` to `gtc`; a market order has no `price` and no `tif`.
//! - `cancel`: `{"order_id": 17}`.
//!
//! Payloads sent (`seq` is the book's count of accepted commands after the change):
//! - `trade`: `{"seq", "price", "qty", "taker_side", "maker_order", "taker_order"}` (no accounts).
//! - `depth` (snapshot, top N levels best first) and `depth_update` (changed levels, `qty` 0 = gone):
//!   `{"seq", "bids": [[price, qty], ...], "asks": [[price, qty], ...]}`.
//! - for one account: `{"type": "accepted"|"fill"|"cancelled"|"done", "order_id", ...}`, see [`account_json`].

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::depth::Level;
use super::order::{Event, Limits, OrderId, OrderKind, Price, Qty, Side, TimeInForce};

/// What is wrong with a push's payload. Each message names the field and says what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The payload is not a JSON object.
    #[error("payload must be a JSON object")]
    NotObject,
    /// A field the push needs is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field no push of this kind has (a typo would otherwise be silently ignored).
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A number field holds a fraction, an exponent, a string or anything else but digits.
    #[error("{0} must be an integer")]
    NotInteger(&'static str),
    /// A number field is zero or negative.
    #[error("{0} must be at least 1")]
    NotPositive(&'static str),
    /// A number field is above the market's bound.
    #[error("{field} must be at most {max}")]
    TooLarge { field: &'static str, max: u64 },
    /// `side` is not `buy` or `sell`.
    #[error("side must be \"buy\" or \"sell\"")]
    BadSide,
    /// `type` is not `limit` or `market`.
    #[error("type must be \"limit\" or \"market\"")]
    BadType,
    /// `tif` is not `gtc` or `ioc`.
    #[error("tif must be \"gtc\" or \"ioc\"")]
    BadTif,
    /// A market order names a price or a time in force.
    #[error("a market order takes no price and no tif")]
    MarketWithLimit,
}

/// A decoded `order` push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRequest {
    pub side: Side,
    pub kind: OrderKind,
    pub qty: Qty,
}

fn object(json: &str) -> Result<Map<String, Value>, InputError> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(InputError::NotObject),
    }
}

fn only_fields(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), InputError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(InputError::UnknownField(unknown.chars().take(40).collect())),
        None => Ok(()),
    }
}

/// A positive integer field no greater than `max`.
fn positive(map: &Map<String, Value>, field: &'static str, max: u64) -> Result<u64, InputError> {
    let value = map.get(field).ok_or(InputError::Missing(field))?;
    let Value::Number(n) = value else { return Err(InputError::NotInteger(field)) };
    match (n.as_u64(), n.as_i64(), n.as_f64()) {
        (Some(0), ..) => Err(InputError::NotPositive(field)),
        (Some(v), ..) if v <= max => Ok(v),
        (Some(_), ..) => Err(InputError::TooLarge { field, max }),
        (None, Some(_), _) => Err(InputError::NotPositive(field)),
        (None, None, Some(f)) if f <= 0.0 => Err(InputError::NotPositive(field)),
        // Beyond 2^64 serde_json holds a float; an integer that large is simply too large.
        (None, None, Some(f)) if f.fract() == 0.0 && f > max as f64 => {
            Err(InputError::TooLarge { field, max })
        }
        _ => Err(InputError::NotInteger(field)),
    }
}

fn text<'m>(map: &'m Map<String, Value>, field: &str) -> Option<&'m str> {
    map.get(field).map(|v| v.as_str().unwrap_or("\u{0}"))
}

/// Decode an `order` push against a market's bounds.
pub fn parse_order(json: &str, limits: &Limits) -> Result<OrderRequest, InputError> {
    let map = object(json)?;
    only_fields(&map, &["side", "type", "price", "qty", "tif"])?;
    let side = match text(&map, "side") {
        None => return Err(InputError::Missing("side")),
        Some("buy") => Side::Buy,
        Some("sell") => Side::Sell,
        Some(_) => return Err(InputError::BadSide),
    };
    let qty = positive(&map, "qty", limits.max_qty)?;
    let kind = match text(&map, "type") {
        None | Some("limit") => {
            let tif = match text(&map, "tif") {
                None | Some("gtc") => TimeInForce::Gtc,
                Some("ioc") => TimeInForce::Ioc,
                Some(_) => return Err(InputError::BadTif),
            };
            OrderKind::Limit { price: positive(&map, "price", limits.max_price)?, tif }
        }
        Some("market") if map.contains_key("price") || map.contains_key("tif") => {
            return Err(InputError::MarketWithLimit)
        }
        Some("market") => OrderKind::Market,
        Some(_) => return Err(InputError::BadType),
    };
    Ok(OrderRequest { side, kind, qty })
}

/// Decode a `cancel` push: the order id.
pub fn parse_cancel(json: &str) -> Result<OrderId, InputError> {
    let map = object(json)?;
    only_fields(&map, &["order_id"])?;
    positive(&map, "order_id", u64::MAX)
}

fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// The public `trade` payload of a `Trade` event; `None` for any other event.
pub fn trade_json(seq: u64, event: &Event) -> Option<String> {
    let Event::Trade { maker, taker, taker_side, price, qty, .. } = *event else { return None };
    Some(format!(
        r#"{{"seq":{seq},"price":{price},"qty":{qty},"taker_side":"{}","maker_order":{maker},"taker_order":{taker}}}"#,
        side_str(taker_side)
    ))
}

fn push_levels(out: &mut String, levels: impl Iterator<Item = Level>) {
    out.push('[');
    for (i, level) in levels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},{}]", level.price, level.qty);
    }
    out.push(']');
}

/// A `depth` snapshot payload: bids and asks best first.
pub fn depth_json(seq: u64, bids: &[Level], asks: &[Level]) -> String {
    let mut out = String::with_capacity(32 + 24 * (bids.len() + asks.len()));
    let _ = write!(out, r#"{{"seq":{seq},"bids":"#);
    push_levels(&mut out, bids.iter().copied());
    out.push_str(r#","asks":"#);
    push_levels(&mut out, asks.iter().copied());
    out.push('}');
    out
}

/// A `depth_update` payload from a book's depth changes (as `Book::take_depth_changes` gives them).
pub fn depth_update_json(seq: u64, changes: &[(Side, Level)]) -> String {
    let mut out = String::with_capacity(32 + 24 * changes.len());
    let _ = write!(out, r#"{{"seq":{seq},"bids":"#);
    push_levels(&mut out, changes.iter().filter(|(s, _)| *s == Side::Buy).map(|(_, l)| *l));
    out.push_str(r#","asks":"#);
    push_levels(&mut out, changes.iter().filter(|(s, _)| *s == Side::Sell).map(|(_, l)| *l));
    out.push('}');
    out
}

/// Calls `send(account, payload)` for each account an event concerns, with what that account sees:
/// - `accepted`: `order_id, side, order_type ("limit"|"market"), price and tif (null for market), qty`;
/// - `fill` (one per side of a trade): `order_id, side, price, qty, liquidity ("maker"|"taker")`;
/// - `cancelled`: `order_id, qty (the remainder removed), reason ("requested"|"unfilled"|"self_trade")`;
/// - `done`: `order_id, filled`.
///
/// `Rejected` concerns no one here: it is the reply to the push.
pub fn account_json(event: &Event, mut send: impl FnMut(u64, String)) {
    match *event {
        Event::Accepted { order, account, side, kind, qty } => {
            let (kind, price, tif) = match kind {
                OrderKind::Limit { price, tif } => {
                    let tif = match tif {
                        TimeInForce::Gtc => "gtc",
                        TimeInForce::Ioc => "ioc",
                    };
                    ("limit", price.to_string(), format!("\"{tif}\""))
                }
                OrderKind::Market => ("market", "null".to_owned(), "null".to_owned()),
            };
            send(
                account,
                format!(
                    r#"{{"type":"accepted","order_id":{order},"side":"{}","order_type":"{kind}","price":{price},"qty":{qty},"tif":{tif}}}"#,
                    side_str(side)
                ),
            );
        }
        Event::Trade { maker, maker_account, taker, taker_account, taker_side, price, qty } => {
            send(maker_account, fill(maker, taker_side.opposite(), price, qty, "maker"));
            send(taker_account, fill(taker, taker_side, price, qty, "taker"));
        }
        Event::Cancelled { order, account, qty, reason } => send(
            account,
            format!(
                r#"{{"type":"cancelled","order_id":{order},"qty":{qty},"reason":"{}"}}"#,
                reason.as_str()
            ),
        ),
        Event::Done { order, account, filled } => {
            send(account, format!(r#"{{"type":"done","order_id":{order},"filled":{filled}}}"#))
        }
        Event::Rejected { .. } => {}
    }
}

fn fill(order: OrderId, side: Side, price: Price, qty: Qty, liquidity: &str) -> String {
    format!(
        r#"{{"type":"fill","order_id":{order},"side":"{}","price":{price},"qty":{qty},"liquidity":"{liquidity}"}}"#,
        side_str(side)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::market::{CancelReason, RejectReason};
    use serde_json::json;

    const LIMITS: Limits = Limits { max_price: 1000, max_qty: 50, max_orders: 10 };

    #[test]
    fn orders_decode_with_defaults() {
        let ok = |json: &str| parse_order(json, &LIMITS).unwrap();
        assert_eq!(
            ok(r#"{"side":"buy","price":101,"qty":5}"#),
            OrderRequest {
                side: Side::Buy,
                kind: OrderKind::Limit { price: 101, tif: TimeInForce::Gtc },
                qty: 5
            }
        );
        assert_eq!(
            ok(r#"{"side":"sell","type":"limit","price":1000,"qty":50,"tif":"ioc"}"#),
            OrderRequest {
                side: Side::Sell,
                kind: OrderKind::Limit { price: 1000, tif: TimeInForce::Ioc },
                qty: 50
            }
        );
        assert_eq!(
            ok(r#"{"side":"sell","type":"market","qty":1}"#),
            OrderRequest { side: Side::Sell, kind: OrderKind::Market, qty: 1 }
        );
        assert_eq!(parse_cancel(r#"{"order_id":17}"#), Ok(17));
    }

    #[test]
    fn every_bad_field_gets_its_own_error() {
        use InputError::*;
        let cases: &[(&str, InputError)] = &[
            ("[1]", NotObject),
            ("not json", NotObject),
            (r#"{"price":1,"qty":1}"#, Missing("side")),
            (r#"{"side":"buy","price":1}"#, Missing("qty")),
            (r#"{"side":"buy","qty":1}"#, Missing("price")),
            (r#"{"side":"hold","price":1,"qty":1}"#, BadSide),
            (r#"{"side":1,"price":1,"qty":1}"#, BadSide),
            (r#"{"side":"buy","type":"stop","price":1,"qty":1}"#, BadType),
            (r#"{"side":"buy","price":1,"qty":1,"tif":"fok"}"#, BadTif),
            (r#"{"side":"buy","type":"market","price":1,"qty":1}"#, MarketWithLimit),
            (r#"{"side":"buy","price":1,"qty":1,"quantity":2}"#, UnknownField("quantity".into())),
            (r#"{"side":"buy","price":1,"qty":0}"#, NotPositive("qty")),
            (r#"{"side":"buy","price":1,"qty":-3}"#, NotPositive("qty")),
            (r#"{"side":"buy","price":-0.5,"qty":1}"#, NotPositive("price")),
            (r#"{"side":"buy","price":0,"qty":1}"#, NotPositive("price")),
            (r#"{"side":"buy","price":1,"qty":1.5}"#, NotInteger("qty")),
            (r#"{"side":"buy","price":1,"qty":"5"}"#, NotInteger("qty")),
            (r#"{"side":"buy","price":1,"qty":null}"#, NotInteger("qty")),
            (r#"{"side":"buy","price":1,"qty":51}"#, TooLarge { field: "qty", max: 50 }),
            (r#"{"side":"buy","price":1001,"qty":1}"#, TooLarge { field: "price", max: 1000 }),
            (r#"{"side":"buy","price":1,"qty":1e300}"#, TooLarge { field: "qty", max: 50 }),
            (r#"{"side":"buy","price":1,"qty":18446744073709551616}"#, TooLarge { field: "qty", max: 50 }),
        ];
        for (json, want) in cases {
            assert_eq!(parse_order(json, &LIMITS).as_ref(), Err(want), "{json}");
        }
        assert_eq!(parse_cancel(r#"{"order_id":-1}"#), Err(NotPositive("order_id")));
        assert_eq!(parse_cancel(r#"{"order_id":"7"}"#), Err(NotInteger("order_id")));
        assert_eq!(parse_cancel(r#"{}"#), Err(Missing("order_id")));
        assert_eq!(NotPositive("qty").to_string(), "qty must be at least 1");
        assert_eq!(TooLarge { field: "price", max: 1000 }.to_string(), "price must be at most 1000");
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn public_payloads() {
        let trade = Event::Trade {
            maker: 3,
            maker_account: 9,
            taker: 4,
            taker_account: 8,
            taker_side: Side::Buy,
            price: 100,
            qty: 2,
        };
        assert_eq!(
            parsed(&trade_json(7, &trade).unwrap()),
            json!({"seq": 7, "price": 100, "qty": 2, "taker_side": "buy", "maker_order": 3, "taker_order": 4})
        );
        assert_eq!(trade_json(7, &Event::Done { order: 1, account: 1, filled: 0 }), None);
        let level = |price, qty| Level { price, qty };
        assert_eq!(
            parsed(&depth_json(3, &[level(99, 5), level(98, 1)], &[])),
            json!({"seq": 3, "bids": [[99, 5], [98, 1]], "asks": []})
        );
        let changes = [(Side::Buy, level(99, 0)), (Side::Sell, level(100, 4)), (Side::Sell, level(101, 2))];
        assert_eq!(
            parsed(&depth_update_json(4, &changes)),
            json!({"seq": 4, "bids": [[99, 0]], "asks": [[100, 4], [101, 2]]})
        );
    }

    #[test]
    fn each_account_sees_its_own_side() {
        let mut sent = Vec::new();
        let events = [
            Event::Accepted {
                order: 4,
                account: 8,
                side: Side::Buy,
                kind: OrderKind::Limit { price: 100, tif: TimeInForce::Ioc },
                qty: 5,
            },
            Event::Trade {
                maker: 3,
                maker_account: 9,
                taker: 4,
                taker_account: 8,
                taker_side: Side::Buy,
                price: 100,
                qty: 2,
            },
            Event::Cancelled { order: 4, account: 8, qty: 3, reason: CancelReason::Unfilled },
            Event::Done { order: 4, account: 8, filled: 2 },
            Event::Accepted { order: 5, account: 9, side: Side::Sell, kind: OrderKind::Market, qty: 1 },
            Event::Rejected { account: 9, reason: RejectReason::NotOwner },
        ];
        for event in &events {
            account_json(event, |account, text| sent.push((account, parsed(&text))));
        }
        assert_eq!(
            sent,
            vec![
                (
                    8,
                    json!({"type": "accepted", "order_id": 4, "side": "buy", "order_type": "limit", "price": 100, "qty": 5, "tif": "ioc"})
                ),
                (
                    9,
                    json!({"type": "fill", "order_id": 3, "side": "sell", "price": 100, "qty": 2, "liquidity": "maker"})
                ),
                (
                    8,
                    json!({"type": "fill", "order_id": 4, "side": "buy", "price": 100, "qty": 2, "liquidity": "taker"})
                ),
                (8, json!({"type": "cancelled", "order_id": 4, "qty": 3, "reason": "unfilled"})),
                (8, json!({"type": "done", "order_id": 4, "filled": 2})),
                (
                    9,
                    json!({"type": "accepted", "order_id": 5, "side": "sell", "order_type": "market", "price": null, "qty": 1, "tif": null})
                ),
            ]
        );
    }
}
