//! `analysis::tune`: the proposed table keeps Go's constraints and fits a known workload.

use analysis::tune::{self, SizeHistogram};
use replayer::sizeclass::SizeClasses;

fn hist(pairs: &[(u64, u64)]) -> SizeHistogram {
    let mut h = SizeHistogram::default();
    for &(s, n) in pairs {
        h.counts.insert(s, n);
    }
    h
}

fn check_constraints(rows: &[tune::ClassRow], max_classes: usize) {
    assert!(rows.len() <= max_classes);
    assert!(rows.iter().any(|r| r.bytes_per_obj == 16), "16 is a class");
    assert_eq!(rows.last().unwrap().bytes_per_obj, 32768);
    let mut prev = 0;
    for r in rows {
        let s = r.bytes_per_obj;
        assert!(s > prev, "sizes increase");
        prev = s;
        assert_eq!(s % 8, 0, "{s}");
        if s >= 32 {
            assert_eq!(s % 16, 0, "{s}");
        }
        if s > 1024 {
            assert_eq!(s % 128, 0, "{s}");
        }
        assert_eq!(r.bytes_per_span % 8192, 0);
        assert!(r.objects >= 1 && r.objects <= 1024);
        assert_eq!(r.objects, r.bytes_per_span / s);
        assert_eq!(r.tail_waste_bytes, r.bytes_per_span - r.objects * s);
        assert!(r.tail_waste_bytes * 8 <= r.bytes_per_span, "tail of {s}");
    }
    let csv = tune::to_csv(rows);
    let t = SizeClasses::from_csv_text("proposal", &csv, 8192).unwrap();
    assert_eq!(t.num_classes(), rows.len() + 1);
    t.check_invariants();
}

#[test]
fn spans_follow_gos_generator_rule() {
    // 8: 1024 objects in one page; 1664: 8192 % 1664 = 1536 > 1024, so two pages hold 9 with
    // 1408 left (<= 2048); 32768: four pages, no tail.
    assert_eq!(tune::span_for(8), (8192, 1024));
    assert_eq!(tune::span_for(1664), (16384, 9));
    assert_eq!(tune::span_for(32768), (32768, 1));
    // Go's first rows: max waste of 8 is 7 * 1024 / 8192 = 87.5 %, of 16 after 8 is
    // 7 * 512 / 8192 = 43.75 %, of 24 after 16 is (7 * 341 + 8) / 8192 = 29.24 %.
    let rows = tune::rows(&[8, 16, 24]);
    let w: Vec<f64> = rows.iter().map(|r| r.max_waste_pct).collect();
    assert_eq!(w, vec![87.5, 43.75, 29.24]);
    assert_eq!(
        tune::to_csv(&rows).lines().next().unwrap(),
        "class,bytes_per_obj,bytes_per_span,objects,tail_waste,max_waste_pct"
    );
    assert_eq!(
        tune::to_csv(&rows).lines().nth(3).unwrap(),
        "3,24,8192,341,8,29.24"
    );
}

#[test]
fn exact_sizes_become_classes() {
    let h = hist(&[(592, 1000), (1664, 1000), (100, 50)]);
    let rows = tune::propose(&h, 67).unwrap();
    check_constraints(&rows, 67);
    let sizes: Vec<u64> = rows.iter().map(|r| r.bytes_per_obj).collect();
    assert!(sizes.contains(&592) && sizes.contains(&1664), "{sizes:?}");
    // 100 is not a multiple of 16: the best class is 112 (12 bytes each).
    assert!(sizes.contains(&112), "{sizes:?}");
    assert_eq!(tune::roundup_waste_bytes(&h, &sizes), 50 * 12);
    // Under Go's table: 592 -> 640, 1664 -> 1792, 100 -> 112.
    let go = SizeClasses::go();
    let go_sizes: Vec<u64> = (1..go.num_classes())
        .map(|c| go.size_bytes(replayer::sizeclass::SizeClass(c as u8)) as u64)
        .collect();
    assert_eq!(
        tune::roundup_waste_bytes(&h, &go_sizes),
        1000 * 48 + 1000 * 128 + 50 * 12
    );
}

#[test]
fn few_classes_still_cover_every_size() {
    let h = hist(&[(592, 1000), (1664, 1000)]);
    let rows = tune::propose(&h, 3).unwrap();
    check_constraints(&rows, 3);
    let sizes: Vec<u64> = rows.iter().map(|r| r.bytes_per_obj).collect();
    // 16 and 32768 are fixed; the third class serves both sizes best at 1664.
    assert_eq!(sizes, vec![16, 1664, 32768]);
}

#[test]
fn a_spread_workload_keeps_constraints() {
    let mut pairs = Vec::new();
    let mut x = 12345u64;
    for _ in 0..500 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        pairs.push((16 + (x >> 33) % 32000, 1 + (x >> 50) % 100));
    }
    let h = hist(&pairs);
    for n in [2, 10, 67, 127] {
        check_constraints(&tune::propose(&h, n).unwrap(), n);
    }
    // An empty workload gets a table from the prior alone.
    check_constraints(&tune::propose(&SizeHistogram::default(), 67).unwrap(), 67);
}

#[test]
fn bad_class_counts_are_errors() {
    for n in [0, 1, 128] {
        let e = tune::propose(&SizeHistogram::default(), n).unwrap_err();
        assert!(e.to_string().contains("--classes"), "{e}");
    }
}
