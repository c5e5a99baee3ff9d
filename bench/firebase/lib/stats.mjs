// Percentiles of latency samples, as every figure of the comparison reports them.

/**
 * `{count, min, mean, p50, p90, p99, max}` of `samples` (milliseconds), nearest-rank percentiles; `null`
 * when there are no samples, so an empty figure can never pass for a fast one.
 */
export function summarize(samples) {
  if (samples.length === 0) return null;
  const sorted = Float64Array.from(samples).sort();
  const rank = (p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    min: round(sorted[0]),
    mean: round(sum / sorted.length),
    p50: round(rank(50)),
    p90: round(rank(90)),
    p99: round(rank(99)),
    max: round(sorted[sorted.length - 1]),
  };
}

/** Milliseconds to the microsecond: finer digits are below what a JavaScript timer can tell apart. */
function round(ms) {
  return Math.round(ms * 1000) / 1000;
}
