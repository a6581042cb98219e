//! Output: a readable table on stdout, then one JSON line per run (`{"scenario":...}`), also
//! appended to `--json-out FILE` when given, so runs can be collected with `grep '^{'`.

use std::{
    io::Write,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Percentiles of a ns histogram, in the given unit (1e3 → µs, 1e6 → ms).
pub fn percentiles(h: &Histogram<u64>, unit_ns: f64) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let q = |p: f64| round3(h.value_at_quantile(p) as f64 / unit_ns);
    json!({
        "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
        "max": round3(h.max() as f64 / unit_ns), "mean": round3(h.mean() / unit_ns),
        "count": h.len(),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn pct_line(v: &Value, unit: &str) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} {unit}",
        v["p50"], v["p90"], v["p99"], v["p999"], v["max"]
    )
}

/// UTC date and time, `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, H. Hinnant's algorithm).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Prints the table lines and the JSON line; appends the JSON line to `json_out`.
pub fn emit(table: &[(String, String)], result: &Value, json_out: Option<&Path>) {
    let mut out = std::io::stdout().lock();
    let width = table.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in table {
        let _ = writeln!(out, "  {k:<width$}  {v}");
    }
    let line = result.to_string();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Some(p) = json_out {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("tickcast-bench: cannot append to {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_format() {
        let s = utc_now();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20"));
        assert!(s.ends_with('Z'));
    }

    #[test]
    fn percentiles_in_units() {
        let mut h = crate::stats::new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h, 1e3);
        assert!((p["p50"].as_f64().unwrap() - 500.0).abs() < 1.0);
        assert!((p["max"].as_f64().unwrap() - 1000.0).abs() < 1.0);
        assert!(percentiles(&crate::stats::new_hist(), 1e3).is_null());
    }
}
