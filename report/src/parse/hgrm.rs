//! HdrHistogram percentile distribution text (`.hgrm`), as `HistogramLogProcessor` and
//! `rusher-loadgen` print it: a header, one row per percentile step, and `#[...]` footer lines.
//! `rusher-loadgen` writes values in milliseconds (histograms in µs, unit scale 1000).

use super::ParseError;

/// One row: the value at or below which `percentile` of the samples fall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Latency in milliseconds.
    pub value_ms: f64,
    /// Fraction of samples at or below `value_ms`, in 0..=1.
    pub percentile: f64,
    /// Samples counted up to this row.
    pub total_count: u64,
}

/// A parsed `.hgrm` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Hgrm {
    /// Rows in file order: percentiles never decrease.
    pub points: Vec<Point>,
    /// `#[Mean = ...]`, in ms.
    pub mean_ms: Option<f64>,
    /// `StdDeviation`, in ms.
    pub stddev_ms: Option<f64>,
    /// `#[Max = ...]`, in ms.
    pub max_ms: Option<f64>,
    /// `Total count`.
    pub total_count: Option<u64>,
}

/// The order metrics are shown in: the connection phases first, then the scenario's own.
pub fn metric_order(name: &str) -> (usize, &str) {
    const ORDER: [&str; 6] = ["tcp", "establish", "ack", "delivery", "event", "every-copy"];
    (ORDER.iter().position(|m| *m == name).unwrap_or(ORDER.len()), name)
}

/// Parses `.hgrm` text.
pub fn parse(text: &str) -> Result<Hgrm, ParseError> {
    let mut h = Hgrm { points: Vec::new(), mean_ms: None, stddev_ms: None, max_ms: None, total_count: None };
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with("Value") {
            continue;
        }
        if let Some(footer) = line.strip_prefix("#[").and_then(|l| l.strip_suffix(']')) {
            footer_fields(footer, &mut h, line_no)?;
            continue;
        }
        let bad = |reason: &str| ParseError::Line { line: line_no, reason: format!("{reason}: {line:?}") };
        let mut cols = line.split_whitespace();
        let mut next_f64 = |what: &str| -> Result<f64, ParseError> {
            cols.next().and_then(|c| c.parse::<f64>().ok()).ok_or_else(|| bad(&format!("expected {what}")))
        };
        let value_ms = next_f64("a value")?;
        let percentile = next_f64("a percentile")?;
        let total = next_f64("a total count")?;
        if !(0.0..=1.0).contains(&percentile) {
            return Err(bad("percentile outside 0..1"));
        }
        if h.points.last().is_some_and(|p| p.percentile > percentile) {
            return Err(bad("percentiles must not decrease"));
        }
        h.points.push(Point { value_ms, percentile, total_count: total as u64 });
    }
    Ok(h)
}

/// Reads `Key = value` pairs of one footer line (`Mean = 1.5, StdDeviation = 0.2`).
fn footer_fields(footer: &str, h: &mut Hgrm, line: usize) -> Result<(), ParseError> {
    for field in footer.split(',') {
        let Some((key, value)) = field.split_once('=') else { continue };
        let value = value.trim();
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| ParseError::Line { line, reason: format!("not a number: {value:?}") })
        };
        match key.trim() {
            "Mean" => h.mean_ms = Some(number()?),
            "StdDeviation" => h.stddev_ms = Some(number()?),
            "Max" => h.max_ms = Some(number()?),
            "Total count" => h.total_count = Some(number()? as u64),
            // Buckets and SubBuckets describe the histogram's layout, not the data.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "       Value     Percentile TotalCount 1/(1-Percentile)

       0.201 0.000000000000          1           1.00
       7.203 0.500000000000      68246           2.00
      23.359 0.900000000000     122840          10.00
     145.791 0.999993133545     136483      145635.56
     145.791 1.000000000000     136483
#[Mean    =       10.569, StdDeviation   =       11.009]
#[Max     =      145.791, Total count    =       136483]
#[Buckets =           22, SubBuckets     =         2048]
";

    #[test]
    fn rows_and_footer() {
        let h = parse(SAMPLE).unwrap();
        assert_eq!(h.points.len(), 5);
        assert_eq!(h.points[1], Point { value_ms: 7.203, percentile: 0.5, total_count: 68246 });
        // The last row has no 1/(1-p) column.
        assert_eq!(h.points[4].percentile, 1.0);
        assert_eq!(h.points[4].total_count, 136483);
        assert_eq!(h.mean_ms, Some(10.569));
        assert_eq!(h.stddev_ms, Some(11.009));
        assert_eq!(h.max_ms, Some(145.791));
        assert_eq!(h.total_count, Some(136483));
    }

    #[test]
    fn empty_histogram_has_no_points() {
        let h = parse("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean    =        0.000, StdDeviation   =        0.000]\n").unwrap();
        assert!(h.points.is_empty());
        assert_eq!(h.mean_ms, Some(0.0));
        assert_eq!(h.max_ms, None);
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let err = parse("Value Percentile\n\n1.0 0.5 10 2.0\nabc 0.9 20\n").unwrap_err();
        assert!(matches!(err, ParseError::Line { line: 4, .. }), "{err}");
        let err = parse("1.0 0.9 10\n2.0 0.5 20\n").unwrap_err();
        assert!(err.to_string().contains("must not decrease"), "{err}");
        let err = parse("1.0 1.5 10\n").unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        let err = parse("#[Mean = x, StdDeviation = 1]\n").unwrap_err();
        assert!(matches!(err, ParseError::Line { line: 1, .. }), "{err}");
    }

    #[test]
    fn metrics_sort_by_phase_then_name() {
        let mut names = vec!["event", "zeta", "tcp", "alpha", "establish"];
        names.sort_by_key(|n| metric_order(n));
        assert_eq!(names, ["tcp", "establish", "event", "alpha", "zeta"]);
    }
}
