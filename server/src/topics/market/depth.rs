//! Market depth: price levels as subscribers see them, and the set of levels a book changed since it
//! was last asked (incremental depth updates: each changed level with its new total, 0 = gone).

use super::order::{Price, Qty, Side};

/// One price level's total resting quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Price,
    pub qty: Qty,
}

/// How many touched levels are kept between drains before they are deduplicated; past twice this
/// after deduplication the set is dropped and the next drain asks for a snapshot instead.
const COMPACT_AT: usize = 4096;

/// The levels touched since the last drain. Bounded: see `COMPACT_AT`.
#[derive(Debug, Clone, Default)]
pub struct DepthChanges {
    touched: Vec<(Side, Price)>,
    /// Changes were dropped: the next drain reports it once.
    lost: bool,
}

impl DepthChanges {
    /// Note that the level at `price` on `side` changed.
    pub fn touch(&mut self, side: Side, price: Price) {
        if self.touched.last() == Some(&(side, price)) {
            return;
        }
        if self.touched.len() >= COMPACT_AT {
            self.compact();
            if self.touched.len() >= COMPACT_AT / 2 {
                self.touched.clear();
                self.lost = true;
            }
        }
        if !self.lost {
            self.touched.push((side, price));
        }
    }

    fn compact(&mut self) {
        self.touched.sort_unstable_by_key(|(side, price)| (*side == Side::Sell, *price));
        self.touched.dedup();
    }

    /// Append each touched level once with its quantity now (`qty_at`), bids then asks, each by price;
    /// `None` (and nothing appended) if changes were dropped since the last drain.
    pub fn drain(&mut self, qty_at: impl Fn(Side, Price) -> Qty, out: &mut Vec<(Side, Level)>) -> Option<()> {
        if std::mem::take(&mut self.lost) {
            self.touched.clear();
            return None;
        }
        self.compact();
        out.extend(
            self.touched.drain(..).map(|(side, price)| (side, Level { price, qty: qty_at(side, price) })),
        );
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_reports_each_level_once_in_order() {
        let mut changes = DepthChanges::default();
        for (side, price) in
            [(Side::Sell, 12), (Side::Buy, 10), (Side::Sell, 11), (Side::Sell, 12), (Side::Buy, 9)]
        {
            changes.touch(side, price);
        }
        let mut out = Vec::new();
        assert_eq!(changes.drain(|_, p| p * 2, &mut out), Some(()));
        let got: Vec<(Side, Price, Qty)> = out.iter().map(|(s, l)| (*s, l.price, l.qty)).collect();
        assert_eq!(
            got,
            vec![(Side::Buy, 9, 18), (Side::Buy, 10, 20), (Side::Sell, 11, 22), (Side::Sell, 12, 24)]
        );
        out.clear();
        assert_eq!(changes.drain(|_, _| 1, &mut out), Some(()));
        assert!(out.is_empty());
    }

    #[test]
    fn repeated_levels_stay_bounded_and_too_many_distinct_ones_ask_for_a_snapshot() {
        let mut changes = DepthChanges::default();
        for i in 0..100_000u64 {
            changes.touch(Side::Buy, i % 7);
        }
        assert!(changes.touched.len() <= COMPACT_AT);
        let mut out = Vec::new();
        assert_eq!(changes.drain(|_, _| 1, &mut out), Some(()));
        assert_eq!(out.len(), 7);

        for price in 0..(COMPACT_AT as u64 * 4) {
            changes.touch(Side::Sell, price);
        }
        assert!(changes.touched.len() <= COMPACT_AT);
        out.clear();
        assert_eq!(changes.drain(|_, _| 1, &mut out), None);
        assert!(out.is_empty());
        changes.touch(Side::Sell, 5);
        assert_eq!(changes.drain(|_, _| 3, &mut out), Some(()));
        assert_eq!(out, vec![(Side::Sell, Level { price: 5, qty: 3 })]);
    }
}
