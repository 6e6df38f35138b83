//! Encode and decode throughput of the .atrace format, in events per second.
//! `cargo bench -p benches --bench trace_codec`; figures go to BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use traces::chunk::{decode_events, ChunkEncoder, ChunkHeader};
use traces::{Header, TraceReader, TraceWriter, WriterOptions};

const CHUNK: usize = 1 << 16;

fn codec(c: &mut Criterion) {
    let events = benches::realistic_events(CHUNK, 4);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements(CHUNK as u64));
    for level in [1, 3] {
        let mut enc = ChunkEncoder::default();
        let mut out = Vec::new();
        g.bench_with_input(
            BenchmarkId::new("encode_zstd", level),
            &level,
            |b, &level| {
                b.iter(|| {
                    out.clear();
                    enc.encode(&events, 0, level, &mut out).unwrap();
                    out.len()
                })
            },
        );
        out.clear();
        enc.encode(&events, 0, level, &mut out).unwrap();
        let h = ChunkHeader::parse(out[..64].try_into().unwrap()).unwrap();
        eprintln!(
            "zstd level {level}: {:.2} bytes/event on disk ({} events)",
            out.len() as f64 / CHUNK as f64,
            CHUNK
        );
        let mut back = Vec::new();
        g.bench_with_input(BenchmarkId::new("decode_zstd", level), &level, |b, _| {
            b.iter(|| {
                decode_events(&h, &out[64..], &mut back).unwrap();
                back.len()
            })
        });
    }
    g.finish();

    // Whole files: ordered (merging per-thread chunks) and parallel per-chunk.
    let n = 4 * CHUNK * 4;
    let events = benches::realistic_events(n, 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.atrace");
    let file = std::fs::File::create(&path).unwrap();
    let opts = WriterOptions {
        chunk_events: CHUNK,
        zstd_level: 3,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::with_options(file, &Header::default(), opts).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    w.finish().unwrap();
    let reader = TraceReader::open(&path).unwrap();
    let mut g = c.benchmark_group("file");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.bench_function("read_ordered", |b| {
        b.iter(|| reader.events().filter(|e| e.is_ok()).count())
    });
    g.bench_function("read_parallel_chunks", |b| {
        b.iter(|| {
            reader
                .par_map_chunks(|evs| evs.len())
                .unwrap()
                .iter()
                .sum::<usize>()
        })
    });
    g.finish();

    // A real recording, when given: ALLOCSCOPE_BENCH_TRACE=path/to/file.atrace.
    if let Ok(path) = std::env::var("ALLOCSCOPE_BENCH_TRACE") {
        let reader = TraceReader::open(std::path::Path::new(&path)).unwrap();
        let n = reader.event_count();
        eprintln!(
            "{path}: {n} events, {:.2} bytes/event",
            reader.file_len() as f64 / n as f64
        );
        let mut g = c.benchmark_group("recorded");
        g.throughput(Throughput::Elements(n));
        g.sample_size(10);
        g.bench_function("read_ordered", |b| {
            b.iter(|| reader.events().filter(|e| e.is_ok()).count())
        });
        g.bench_function("read_parallel_chunks", |b| {
            b.iter(|| {
                reader
                    .par_map_chunks(|evs| evs.len())
                    .unwrap()
                    .iter()
                    .sum::<usize>()
            })
        });
        g.bench_function("stats", |b| {
            b.iter(|| {
                let mut s = traces::stats::TraceStats::new();
                reader.events().flatten().for_each(|e| s.add(&e));
                s.events
            })
        });
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
