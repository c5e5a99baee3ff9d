//! Axes: the HdrHistogram percentile axis and round tick values for linear axes.

/// Percentile ticks shown on a percentile axis, as fractions.
pub const PERCENTILE_TICKS: [f64; 7] = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999];

/// Position of percentile `p` (a fraction) on the HdrHistogram axis: `log10(1 / (1 - p))`, so 90%
/// is at 1, 99% at 2, 99.9% at 3. `None` for `p >= 1`, which lies at infinity, and for `p < 0`.
pub fn percentile_x(p: f64) -> Option<f64> {
    (0.0..1.0).contains(&p).then(|| -(1.0 - p).log10())
}

/// A percentile tick's label: `0.999` → `99.9%`.
pub fn percentile_label(p: f64) -> String {
    let pct = p * 100.0;
    // Enough decimals to show every nine, and none beyond.
    let decimals =
        (0..6).find(|d| ((pct * 10f64.powi(*d)).round() - pct * 10f64.powi(*d)).abs() < 1e-6).unwrap_or(6);
    format!("{pct:.prec$}%", prec = decimals as usize)
}

/// Where a percentile axis ends: past the largest position in the data, at least 99.99%, and
/// at most 99.9999% (a run has too few samples to say anything further out).
pub fn percentile_axis_end(max_x: f64) -> f64 {
    max_x.ceil().clamp(4.0, 6.0)
}

/// Round tick values from 0 to at least `max`: 1, 2 or 5 times a power of ten apart, about
/// five of them. The last tick is the axis end.
pub fn nice_ticks(max: f64) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0, 1.0];
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let count = (max / step - 1e-9).ceil() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// A tick label without float noise: `0.30000000000000004` → `0.3`, `20000` → `20,000`.
pub fn tick_label(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        crate::page::format::thousands(v.round() as u64)
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_positions_are_nines() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(percentile_x(0.0).unwrap(), 0.0));
        assert!(close(percentile_x(0.5).unwrap(), 2f64.log10()));
        assert!(close(percentile_x(0.9).unwrap(), 1.0));
        assert!(close(percentile_x(0.99).unwrap(), 2.0));
        assert!(close(percentile_x(0.999).unwrap(), 3.0));
        assert!(close(percentile_x(0.9999).unwrap(), 4.0));
        assert_eq!(percentile_x(1.0), None);
        assert_eq!(percentile_x(-0.1), None);
    }

    #[test]
    fn percentile_labels() {
        let labels: Vec<_> = PERCENTILE_TICKS.iter().map(|p| percentile_label(*p)).collect();
        assert_eq!(labels, ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn axis_end_covers_the_data() {
        assert_eq!(percentile_axis_end(2.3), 4.0);
        assert_eq!(percentile_axis_end(4.2), 5.0);
        assert_eq!(percentile_axis_end(9.0), 6.0);
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(nice_ticks(145.791), [0.0, 50.0, 100.0, 150.0]);
        assert_eq!(nice_ticks(100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(200_000.0), [0.0, 50_000.0, 100_000.0, 150_000.0, 200_000.0]);
        let small = nice_ticks(0.42);
        assert!(small.last().unwrap() >= &0.42 && small.len() <= 7, "{small:?}");
        assert_eq!(nice_ticks(0.0), [0.0, 1.0]);
        assert_eq!(tick_label(0.1 + 0.2), "0.3");
        assert_eq!(tick_label(20000.0), "20,000");
    }
}
