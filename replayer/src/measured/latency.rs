//! Latency histograms (HdrHistogram) for replayed calls, their percentile summaries, and their
//! outputs: `.hlog` interval logs for the standard HdrHistogram tools, and a percentile CSV.
//!
//! A [`LatencySet`] is a fixed list of named histograms (one per op, size group or model path);
//! the replay loop records into them by index, so recording is an array access and a histogram
//! increment. Values are ns, tracked from 1 ns to 1 hour at 3 significant digits.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency tracked: one hour, in ns. Longer values are clamped.
const MAX_NS: u64 = 3_600_000_000_000;

/// Percentiles of one histogram, ns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p99_9_ns: u64,
    pub p99_99_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p99_9_ns: h.value_at_quantile(0.999),
            p99_99_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
        }
    }
}

/// Named histograms recorded by index.
#[derive(Clone, Debug)]
pub struct LatencySet {
    /// What the set groups by ("op", "size", "path").
    pub group: &'static str,
    names: Vec<&'static str>,
    hists: Vec<Histogram<u64>>,
}

impl LatencySet {
    pub fn new(group: &'static str, names: &[&'static str]) -> LatencySet {
        let hists = names
            .iter()
            .map(|_| Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds"))
            .collect();
        LatencySet {
            group,
            names: names.to_vec(),
            hists,
        }
    }

    /// Records one call of `ns` into histogram `index`.
    #[inline]
    pub fn record(&mut self, index: usize, ns: u64) {
        self.hists[index].saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Adds another set's counts (same group and names), e.g. from another thread or repeat.
    pub fn merge(&mut self, other: &LatencySet) {
        assert_eq!(
            self.names, other.names,
            "merging latency sets of different shapes"
        );
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            a.add(b).expect("same bounds");
        }
    }

    /// Percentiles of every histogram that recorded something, by name.
    pub fn summary(&self) -> Vec<(&'static str, Percentiles)> {
        self.names
            .iter()
            .zip(&self.hists)
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| (*n, Percentiles::of(h)))
            .collect()
    }

    /// All histograms merged into one.
    pub fn total(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds");
        for h in &self.hists {
            all.add(h).expect("same bounds");
        }
        all
    }

    /// Appends rows `group,name,count,mean_ns,p50_ns,...` to a percentile CSV.
    pub fn write_csv_rows(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (name, p) in self.summary() {
            writeln!(
                out,
                "{},{},{},{:.1},{},{},{},{},{},{}",
                self.group,
                name,
                p.count,
                p.mean_ns,
                p.p50_ns,
                p.p90_ns,
                p.p99_ns,
                p.p99_9_ns,
                p.p99_99_ns,
                p.max_ns
            )?;
        }
        Ok(())
    }
}

/// Writes the non-empty histograms of several sets into one `.hlog` file (tags
/// `<group>.<name>`, one interval each covering `duration`).
pub fn write_hlog_sets(
    path: &Path,
    sets: &[&LatencySet],
    duration: Duration,
) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("allocscope replay latencies, ns")
        .with_max_value_divisor(1.0)
        .begin_log_with(&mut file, &mut serializer)?;
    for set in sets {
        for (name, h) in set
            .names
            .iter()
            .zip(&set.hists)
            .filter(|(_, h)| !h.is_empty())
        {
            let tag = format!("{}.{}", set.group, name);
            log.write_histogram(h, Duration::ZERO, duration, Tag::new(&tag))
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
    }
    drop(log);
    file.flush()
}

/// Header row of the percentile CSV.
pub const CSV_HEADER: &str =
    "group,name,count,mean_ns,p50_ns,p90_ns,p99_ns,p99_9_ns,p99_99_ns,max_ns";

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut set = LatencySet::new("op", &["malloc", "free"]);
        for v in 1..=1000 {
            set.record(0, v);
        }
        set.record(1, 5);
        let s = set.summary();
        let (name, p) = &s[0];
        assert_eq!(*name, "malloc");
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ns, 500);
        assert_eq!(p.p90_ns, 900);
        assert_eq!(p.p99_ns, 990);
        assert_eq!(p.max_ns, 1000);
        assert_eq!(s[1].1.count, 1);
        assert_eq!(set.total().len(), 1001);
    }

    #[test]
    fn hlog_reads_back_with_tags_and_counts() {
        let mut set = LatencySet::new("op", &["malloc", "free", "calloc"]);
        for v in 0..500u64 {
            set.record(0, 10 + v);
            set.record(1, 20);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lat.hlog");
        write_hlog_sets(&path, &[&set], Duration::from_secs(2)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut tags = Vec::new();
        let mut de = Deserializer::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let Ok(LogEntry::Interval(iv)) = entry {
                tags.push(iv.tag().unwrap().as_str().to_string());
                let raw = base64_decode(iv.encoded_histogram());
                let h: Histogram<u64> = de.deserialize(&mut &raw[..]).unwrap();
                assert_eq!(h.len(), 500);
            }
        }
        assert_eq!(tags, ["op.malloc", "op.free"]);
        let mut csv = Vec::new();
        set.write_csv_rows(&mut csv).unwrap();
        assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 2);
    }

    /// Standard base64 (the .hlog payload encoding), decoded by hand for the test.
    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        } as u32;
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                acc |= val(c) << (18 - 6 * i);
            }
            let n = chunk.len() * 6 / 8;
            for i in 0..n {
                out.push((acc >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}
