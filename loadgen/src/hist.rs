//! Latency histograms in microseconds: recording with coordinated-omission correction, the wire
//! encoding agents use to ship histograms to the coordinator, exact merging, and the two
//! HdrHistogram text formats (`.hgrm` percentile distribution and the interval log) that existing
//! HdrHistogram plotters read.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hdrhistogram::errors::AdditionError;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{DeserializeError, Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest latency a histogram distinguishes: 1 µs.
pub const LOWEST_US: u64 = 1;
/// Highest latency a histogram tracks: one hour in µs. Longer latencies are recorded as this.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept: values are exact to 0.1 %.
pub const SIGFIG: u8 = 3;
/// Largest base64 text `decode` accepts. A full 1 µs .. 1 h histogram compresses to a few tens
/// of KiB, so anything this large is not one of ours.
pub const MAX_ENCODED_LEN: usize = 16 * 1024 * 1024;
/// Percentile ticks per half distance in `.hgrm` output, as HdrHistogram's own tools default to.
pub const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Errors from decoding or merging histograms.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// The text handed to `decode` is longer than `MAX_ENCODED_LEN`.
    #[error("encoded histogram is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Length of the rejected text.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// The text is not valid standard base64.
    #[error("encoded histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not a V2 (compressed or plain) HdrHistogram.
    #[error("cannot deserialize histogram: {0}")]
    Deserialize(#[from] DeserializeError),
    /// The source histogram holds values the destination cannot track.
    #[error("cannot merge histograms: {0}")]
    Merge(#[from] AdditionError),
}

/// A new, empty latency histogram: 1 µs .. 1 hour, 3 significant digits, fixed size.
pub fn new_hist() -> Histogram<u64> {
    // The bounds are constants that satisfy every precondition of `new_with_bounds`
    // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// Records one latency; values above the histogram's highest trackable value are recorded as
/// that value, so a stuck request shows up as "at least an hour" instead of being lost.
pub fn record(h: &mut Histogram<u64>, latency_us: u64) {
    h.saturating_record(latency_us);
}

/// Records one latency measured by a closed-loop sender (one that waits for each reply before
/// sending the next request), correcting for coordinated omission.
///
/// A closed-loop sender stalled by a slow reply does not send the requests it would have sent in
/// the meantime, so the stall is measured once instead of once per missed request. This adds the
/// missing samples: `latency - interval`, `latency - 2 * interval`, ... down to `interval`, exactly
/// as HdrHistogram's `record_correct` does. `expected_interval_us` is the sender's intended time
/// between requests; 0 disables the correction.
///
/// Open-model scenarios must not use this: they send on a schedule regardless of replies and
/// measure each latency from the request's *intended* send time (see `latency_from_intended`),
/// which already counts the time a request waited behind a stall, so correcting again would
/// double-count it.
pub fn record_corrected(h: &mut Histogram<u64>, latency_us: u64, expected_interval_us: u64) {
    let latency_us = latency_us.min(h.high());
    record(h, latency_us);
    if expected_interval_us == 0 || latency_us <= expected_interval_us {
        return;
    }
    // `record_correct` loops once per missing sample, which is 3.6 billion iterations for an hour
    // stall at a 1 µs interval. Instead, record each run of missing samples that falls into one
    // bucket with a single `record_n`, which gives the same counts in at most one step per bucket.
    let interval = expected_interval_us;
    let mut missing = latency_us - interval;
    while missing >= interval {
        let floor = h.lowest_equivalent(missing).max(interval);
        let n = (missing - floor) / interval + 1;
        h.saturating_record_n(missing, n);
        // n * interval <= missing - floor + interval, so this stays >= floor - interval >= 0.
        missing -= n * interval;
    }
}

/// Latency in µs from the moment a request was *meant* to be sent to the moment its reply
/// arrived. Open-model scenarios use this so that time spent queued behind a stall counts as
/// latency, which makes coordinated-omission correction unnecessary. Saturates at 0 if `done`
/// precedes `intended` and at `u64::MAX`.
pub fn latency_from_intended(intended: Instant, done: Instant) -> u64 {
    let us = done.saturating_duration_since(intended).as_micros();
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// Serializes a histogram as HdrHistogram V2 compressed bytes in standard base64, the form agents
/// send to the coordinator and the form used inside interval logs.
///
/// # Panics
///
/// Only if a single bucket holds more than `i64::MAX` samples, which the format cannot express.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail; the serializer's only other error is a count above
    // i64::MAX, which would take centuries of recording at any realistic rate.
    V2DeflateSerializer::new().serialize(h, &mut bytes).expect("histogram counts fit the V2 format");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Parses the output of `encode` (or any V2 HdrHistogram, compressed or not, in standard base64).
pub fn decode(s: &str) -> Result<Histogram<u64>, HistError> {
    let s = s.trim();
    if s.len() > MAX_ENCODED_LEN {
        return Err(HistError::TooLong { len: s.len(), max: MAX_ENCODED_LEN });
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

/// Adds every sample of `from` into `into`. The result is exactly the histogram that would have
/// been recorded had all samples gone into one histogram, which is why the coordinator merges
/// agents' histograms instead of averaging their percentiles.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), HistError> {
    into.add(from)?;
    Ok(())
}

/// The summary statistics reported for every latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample in µs (0 when empty).
    pub min: u64,
    /// Mean in µs (0 when empty).
    pub mean: f64,
    /// Median in µs.
    pub p50: u64,
    /// 90th percentile in µs.
    pub p90: u64,
    /// 99th percentile in µs.
    pub p99: u64,
    /// 99.9th percentile in µs.
    pub p999: u64,
    /// 99.99th percentile in µs.
    pub p9999: u64,
    /// Largest sample in µs (0 when empty).
    pub max: u64,
}

/// Computes the summary statistics of a histogram; all zeros when it is empty.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        min: h.min(),
        mean: h.mean(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        p9999: h.value_at_quantile(0.9999),
        max: if h.is_empty() { 0 } else { h.max() },
    }
}

/// Writes the percentile distribution in the text format of HdrHistogram's
/// `outputPercentileDistribution` (5 ticks per half distance), which HdrHistogram plotters read.
/// Every value is divided by `unit_scale`: 1.0 keeps µs, 1000.0 gives milliseconds.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write, unit_scale: f64) -> io::Result<()> {
    if !(unit_scale.is_finite() && unit_scale > 0.0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unit scale must be a positive number, got {unit_scale}"),
        ));
    }
    // The Java implementation prints values with as many decimals as the histogram has
    // significant digits; plotters do not care, but diffing against Java output does.
    let prec = usize::from(h.sigfig());
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    let mut total = 0u64;
    for v in h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / unit_scale;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            writeln!(out, "{value:12.prec$} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q))?;
        } else {
            writeln!(out, "{value:12.prec$} {q:2.12} {total:10}")?;
        }
    }
    let max = if h.is_empty() { 0 } else { h.max() };
    // The histogram does not expose its sub-bucket count, but its counts array holds
    // (buckets + 1) half-buckets of sub_bucket_count / 2 entries each.
    let sub_buckets = 2 * h.distinct_values() / (usize::from(h.buckets()) + 1);
    writeln!(
        out,
        "#[Mean    = {:12.prec$}, StdDeviation   = {:12.prec$}]",
        h.mean() / unit_scale,
        h.stdev() / unit_scale
    )?;
    writeln!(out, "#[Max     = {:12.prec$}, Total count    = {:12}]", max as f64 / unit_scale, h.len())?;
    writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_buckets)?;
    Ok(())
}

/// An HdrHistogram interval log file: one compressed histogram per interval and tag, readable by
/// HdrHistogram's `HistogramLogReader` and by `hdrhistogram::serialization::interval_log`.
///
/// Interval start times are offsets from the `start` given to `new`, which is written as both
/// `StartTime` and `BaseTime`. The `Interval_Max` column is in milliseconds, the unit the Java
/// tools assume for it; the histograms themselves stay in µs.
pub struct IntervalLog {
    /// Always flushed after each complete line, so a run that dies leaves a readable log.
    out: BufWriter<File>,
}

/// µs per ms: converts the `Interval_Max` column to milliseconds.
const MAX_VALUE_DIVISOR: f64 = 1000.0;

impl IntervalLog {
    /// Creates (or truncates) the log at `path` and writes its header for a run that started at
    /// `start`.
    pub fn new(path: impl AsRef<Path>, start: SystemTime) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment("[Logged with rusher-loadgen]")
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Values in microseconds]")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut out, &mut serializer)?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        out.flush()?;
        Ok(IntervalLog { out })
    }

    /// Appends the histogram of one interval: `tag` names the series (no commas, spaces or line
    /// breaks), `start_offset` is the interval's start relative to the log's start time.
    pub fn append(
        &mut self,
        tag: &str,
        start_offset: Duration,
        duration: Duration,
        h: &Histogram<u64>,
    ) -> io::Result<()> {
        if Tag::new(tag).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interval log tag {tag:?} contains a comma, space or line break"),
            ));
        }
        // One line in the log format's own layout: the crate's writer would repeat its header
        // comments on every line it is rebuilt for.
        writeln!(
            self.out,
            "Tag={},{:.3},{:.3},{:.3},{}",
            tag,
            start_offset.as_secs_f64(),
            duration.as_secs_f64(),
            h.max() as f64 / MAX_VALUE_DIVISOR,
            encode(h)
        )?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    const QUANTILES: [f64; 9] = [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0];

    fn assert_same(a: &Histogram<u64>, b: &Histogram<u64>) {
        assert_eq!(a.len(), b.len());
        assert_eq!(a.min(), b.min());
        assert_eq!(a.max(), b.max());
        for q in QUANTILES {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q), "q = {q}");
        }
        let ca: Vec<_> = a.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        let cb: Vec<_> = b.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        assert_eq!(ca, cb);
    }

    /// A deterministic spread of values over five orders of magnitude.
    fn values(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let exp = (x >> 60) % 6;
                1 + (x >> 20) % 10u64.pow(exp as u32 + 1)
            })
            .collect()
    }

    #[test]
    fn merge_equals_recording_everything_into_one() {
        let (a_vals, b_vals) = (values(1, 5_000), values(2, 7_000));
        let (mut a, mut b, mut all) = (new_hist(), new_hist(), new_hist());
        for &v in &a_vals {
            record(&mut a, v);
            record(&mut all, v);
        }
        for &v in &b_vals {
            record(&mut b, v);
            record(&mut all, v);
        }
        merge(&mut a, &b).unwrap();
        assert_eq!(a.len(), 12_000);
        assert_same(&a, &all);
        assert_eq!(percentiles(&a), percentiles(&all));
    }

    #[test]
    fn merge_rejects_values_the_destination_cannot_hold() {
        let mut small = Histogram::<u64>::new_with_bounds(1, 1_000, 3).unwrap();
        let mut big = new_hist();
        record(&mut big, 1_000_000);
        assert!(matches!(merge(&mut small, &big), Err(HistError::Merge(_))));
    }

    #[test]
    fn record_saturates_instead_of_failing() {
        let mut h = new_hist();
        record(&mut h, u64::MAX);
        record(&mut h, 0);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= HIGHEST_US);
        assert!(h.max() < HIGHEST_US + HIGHEST_US / 1000);
    }

    #[test]
    fn corrected_recording_fills_in_a_stall() {
        let (mut plain, mut corrected) = (new_hist(), new_hist());
        for _ in 0..1_000 {
            record(&mut plain, 1_000);
            record_corrected(&mut corrected, 1_000, 1_000);
        }
        record(&mut plain, 1_000_000);
        record_corrected(&mut corrected, 1_000_000, 1_000);

        assert_eq!(plain.len(), 1_001);
        // The 1 s stall hid 999 requests that would have waited 999 ms, 998 ms, ... 1 ms.
        assert_eq!(corrected.len(), 1_001 + 999);
        assert!(plain.value_at_quantile(0.99) <= 1_001);
        let p99 = corrected.value_at_quantile(0.99);
        assert!(p99 > 900_000, "corrected p99 {p99}");
        assert_eq!(corrected.max(), plain.max());
        assert_eq!(corrected.value_at_quantile(0.5), 1_000);
    }

    #[test]
    fn corrected_recording_matches_record_correct() {
        for (value, interval) in [(1_000_000, 1_000), (123_456, 7), (50_000, 3_333), (5, 10), (10, 10)] {
            let mut ours = new_hist();
            let mut theirs = new_hist();
            record_corrected(&mut ours, value, interval);
            theirs.record_correct(value, interval).unwrap();
            assert_same(&ours, &theirs);
        }
    }

    #[test]
    fn corrected_recording_of_an_hour_at_one_microsecond_is_bounded() {
        let mut h = new_hist();
        let t = Instant::now();
        record_corrected(&mut h, u64::MAX, 1);
        assert_eq!(h.len(), HIGHEST_US);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn latency_from_intended_counts_queueing_time() {
        let intended = Instant::now();
        let done = intended + Duration::from_micros(2_500);
        assert_eq!(latency_from_intended(intended, done), 2_500);
        assert_eq!(latency_from_intended(done, intended), 0);
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut h = new_hist();
        for v in values(3, 10_000) {
            record(&mut h, v);
        }
        let text = encode(&h);
        assert!(text.starts_with("HISTFAA"), "compressed V2 cookie: {}", &text[..10]);
        let back = decode(&text).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.high(), h.high());
        assert_same(&back, &h);

        let empty = decode(&encode(&new_hist())).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(matches!(decode("not base64!"), Err(HistError::Base64(_))));
        assert!(matches!(decode("AAAAAAAA"), Err(HistError::Deserialize(_))));
        let huge = "A".repeat(MAX_ENCODED_LEN + 4);
        assert!(matches!(decode(&huge), Err(HistError::TooLong { .. })));
    }

    #[test]
    fn percentiles_of_known_values() {
        let mut h = new_hist();
        for v in 1..=10_000 {
            record(&mut h, v);
        }
        let p = percentiles(&h);
        assert_eq!(p.count, 10_000);
        assert_eq!(p.min, 1);
        assert!((p.mean - 5_000.5).abs() < 5.0, "mean {}", p.mean);
        assert!(h.equivalent(p.p50, 5_000));
        assert!(h.equivalent(p.p90, 9_000));
        assert!(h.equivalent(p.p99, 9_900));
        assert!(h.equivalent(p.p999, 9_990));
        assert!(h.equivalent(p.p9999, 9_999));
        assert!(h.equivalent(p.max, 10_000));
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["count"], 10_000);

        assert_eq!(percentiles(&new_hist()).max, 0);
    }

    #[test]
    fn hgrm_matches_the_java_format_exactly_for_one_value() {
        let mut h = new_hist();
        record(&mut h, 1_000);
        let mut out = Vec::new();
        write_hgrm(&h, &mut out, 1.0).unwrap();
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)\n\
                        \n\
                        \x20   1000.000 0.000000000000          1           1.00\n\
                        \x20   1000.000 1.000000000000          1\n\
                        #[Mean    =     1000.000, StdDeviation   =        0.000]\n\
                        #[Max     =     1000.000, Total count    =            1]\n\
                        #[Buckets =           22, SubBuckets     =         2048]\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn hgrm_parses_back() {
        let mut h = new_hist();
        for v in values(4, 20_000) {
            record(&mut h, v);
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out, 1000.0).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE).count());
        assert!(rows.len() > 50);

        let mut prev_count = 0;
        let mut prev_value = 0.0;
        for row in &rows[..rows.len() - 1] {
            assert_eq!(row.len(), 4);
            let value: f64 = row[0].parse().unwrap();
            let count: u64 = row[2].parse().unwrap();
            assert!(value >= prev_value && count >= prev_count);
            (prev_value, prev_count) = (value, count);
        }
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3);
        let max_ms: f64 = last[0].parse().unwrap();
        assert!((max_ms - h.max() as f64 / 1000.0).abs() < 0.001);
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2].parse::<u64>().unwrap(), 20_000);
        assert!(text.contains(&format!("Total count    = {:12}]", 20_000)));

        assert!(write_hgrm(&h, &mut Vec::new(), 0.0).is_err());
    }

    #[test]
    fn interval_log_round_trip() {
        let dir = std::env::temp_dir().join(format!("rusher-hist-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.hlog");
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);

        let (mut a, mut b) = (new_hist(), new_hist());
        for v in values(5, 1_000) {
            record(&mut a, v);
        }
        for v in values(6, 2_000) {
            record(&mut b, v * 3);
        }
        let mut log = IntervalLog::new(&path, start).unwrap();
        log.append("chat", Duration::ZERO, Duration::from_secs(1), &a).unwrap();
        log.append("join", Duration::from_millis(1_000), Duration::from_millis(1_000), &b).unwrap();
        assert!(log.append("bad tag", Duration::ZERO, Duration::ZERO, &a).is_err());
        drop(log);

        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(
            "\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
        ));
        let mut entries = IntervalLogIterator::new(&bytes).map(Result::unwrap);
        let expected_start = Duration::from_millis(1_700_000_000_123);
        assert!(matches!(entries.next(), Some(LogEntry::StartTime(t)) if t == expected_start));
        assert!(matches!(entries.next(), Some(LogEntry::BaseTime(t)) if t == expected_start));
        let mut seen = Vec::new();
        for e in entries {
            let LogEntry::Interval(i) = e else {
                panic!("unexpected entry");
            };
            let h = decode(i.encoded_histogram()).unwrap();
            let tag = i.tag().unwrap().as_str().to_owned();
            let want = if tag == "chat" { &a } else { &b };
            assert_eq!(&h, want);
            assert!((i.max() - want.max() as f64 / 1000.0).abs() < 0.001);
            seen.push((tag, i.start_timestamp(), i.duration()));
        }
        assert_eq!(
            seen,
            vec![
                ("chat".to_owned(), Duration::ZERO, Duration::from_secs(1)),
                ("join".to_owned(), Duration::from_secs(1), Duration::from_secs(1)),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
