//! Text formatting shared by the page and the charts.

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count or rate: whole numbers with separators, small fractions with one decimal.
pub fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        thousands(v.round().max(0.0) as u64)
    } else {
        format!("{v:.1}")
    }
}

/// Microseconds as milliseconds with three significant digits or so: `423.7` → `0.42`,
/// `27,000` → `27.0`, `470,783` → `471`.
pub fn ms(us: f64) -> String {
    let ms = us / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        thousands(ms.round() as u64)
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// A byte count per connection: `8360.2` → `8,360 B`.
pub fn bytes(b: f64) -> String {
    format!("{} B", thousands(b.round().max(0.0) as u64))
}

/// A ratio to a baseline: `×1.90`, `×0.500`, `×12`.
pub fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("×{r:.0}")
    } else if r >= 1.0 {
        format!("×{r:.2}")
    } else {
        format!("×{r:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(number(49998.4375), "49,998");
        assert_eq!(number(20.0), "20");
        assert_eq!(number(0.25), "0.2");
        assert_eq!(ms(423.7), "0.42");
        assert_eq!(ms(26575.0), "26.6");
        assert_eq!(ms(470783.0), "471");
        assert_eq!(mib(393044), "383.8 MiB");
        assert_eq!(bytes(8360.209), "8,360 B");
        assert_eq!((ratio(1.9), ratio(0.5), ratio(12.4)), ("×1.90".into(), "×0.500".into(), "×12".into()));
    }
}
