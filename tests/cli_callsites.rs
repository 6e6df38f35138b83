//! `report`'s call-site views on a real recording: collector/tests/c/callsites.c (built -O2
//! -fomit-frame-pointer, recorded under the real shim) has four allocating functions whose
//! figures are computed by hand in its header; the JSON, the CSV and the text must give them.
//! A recording without stacks says so in one line and reports the rest.

mod common;

use std::path::Path;

use serde_json::Value;

use common::allocscope_own_cache as run;

/// Builds and records callsites.c into `dir/t.atrace` with `--stack-depth depth`.
fn record(dir: &Path, depth: &str) {
    record_as(dir, depth, "t.atrace", &[]);
}

/// Builds and records callsites.c with `args` into `dir/out`.
fn record_as(dir: &Path, depth: &str, out: &str, args: &[&str]) {
    common::build_c("cc", "callsites.c", dir, "callsites", &[]);
    common::ok(&run(
        dir,
        &[
            "record",
            "-q",
            "--stack-depth",
            depth,
            "-o",
            out,
            "--",
            "./callsites",
        ]
        .into_iter()
        .chain(args.iter().copied())
        .collect::<Vec<_>>(),
    ));
}

#[test]
fn each_function_s_figures_are_the_hand_computed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d, "64");
    let text = common::ok(&run(
        d,
        &["report", "t.atrace", "--json", "r.json", "--csv", "csv"],
    ));
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    let c = &doc["call_sites"];
    assert_eq!(c["recorded"], true, "{c}");
    assert_eq!(c["peak_live_bytes"], 108000 + 65536 + 11 * 98304);
    let function = |name: &str| -> &Value {
        c["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .unwrap_or_else(|| panic!("no function {name} in {c}"))
    };
    // (allocs, bytes, peak, leaked objects, leaked bytes, temporary, reallocs, copied, waste)
    let figures = |f: &Value| -> [u64; 9] {
        [
            "allocs",
            "bytes",
            "peak_live_bytes",
            "leaked_objects",
            "leaked_bytes",
            "temporary",
            "reallocs",
            "realloc_copied_bytes",
            "waste_bytes",
        ]
        .map(|k| f[k].as_u64().unwrap_or_else(|| panic!("{k} in {f}")))
    };
    // keep_nodes: the array (8000 B, in the 8192-byte class) and 1000 nodes of 100 B (112-byte
    // class), ten never freed.
    assert_eq!(
        figures(function("keep_nodes")),
        [1001, 108000, 108000, 10, 1000, 0, 0, 0, 192 + 12 * 1000]
    );
    // scratch: 5000 temporaries of 33 B (48-byte class).
    assert_eq!(
        figures(function("scratch")),
        [5000, 165000, 0, 0, 0, 5000, 0, 0, 15 * 5000]
    );
    // grow: 64 B doubled ten times, every realloc moving.
    assert_eq!(
        figures(function("grow")),
        [11, 131008, 65536, 0, 0, 0, 10, 65472, 0]
    );
    // block: 11 blockers of 96 KiB, the last freed at once.
    assert_eq!(
        figures(function("block")),
        [11, 11 * 98304, 11 * 98304, 0, 0, 1, 0, 0, 0]
    );
    // The request sizes behind the waste: (request, allocations, slot, waste).
    let sizes = |name: &str| -> Vec<[u64; 4]> {
        function(name)["waste_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                ["request_bytes", "allocs", "slot_bytes", "waste_bytes"]
                    .map(|k| w[k].as_u64().unwrap())
            })
            .collect()
    };
    assert_eq!(sizes("scratch"), [[33, 5000, 48, 75000]]);
    assert_eq!(
        sizes("keep_nodes"),
        [[100, 1000, 112, 12000], [8000, 1, 8192, 192]]
    );
    assert!(sizes("grow").is_empty());
    // Functions by bytes; file and line from the debug information.
    let order: Vec<&str> = c["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["block", "scratch", "grow", "keep_nodes"]);
    assert!(function("scratch")["file"]
        .as_str()
        .unwrap()
        .ends_with("callsites.c"));
    assert!(function("scratch")["p99_ns"].as_u64().unwrap() > 0);
    // Stacks read caller first, through main, to the allocating function.
    for s in c["stacks"].as_array().unwrap() {
        let names: Vec<&str> = s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap())
            .collect();
        let main = names.iter().position(|&n| n == "main").expect("main");
        let leaf = *names.last().unwrap();
        let want: &[&str] = match leaf {
            "block" => &["main", "grow", "block"],
            l => &["main", l][..],
        };
        assert_eq!(&names[main..], want, "{names:?}");
    }
    // Metrics per function for compare and trend.
    assert_eq!(doc["metrics"]["site.keep_nodes.leaked_bytes"], 1000.0);
    assert_eq!(doc["metrics"]["site.scratch.waste_bytes"], 75000.0);
    // The CSV tables and the text.
    let csv = std::fs::read_to_string(d.join("csv/call_sites_functions.csv")).unwrap();
    let row = csv.lines().find(|l| l.starts_with("grow,")).unwrap();
    assert!(
        row.contains(",11,131008,65536,0,0,0,0,10,65472,0,"),
        "{row}"
    );
    let stacks = std::fs::read_to_string(d.join("csv/call_sites_stacks.csv")).unwrap();
    assert!(
        stacks.lines().any(|l| l.contains(";main;grow;block,11,")),
        "{stacks}"
    );
    assert!(text.contains("Call sites, bottom-up"), "{text}");
    let wastes = text
        .lines()
        .find(|l| l.trim_start().starts_with("scratch") && l.contains("x5,000"));
    assert!(
        wastes.is_some_and(|l| l.contains("33 B x5,000 in 48 B")),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("keep_nodes"))
        .unwrap();
    assert!(line.contains("1000 B"), "{line}");
}

#[test]
fn a_recording_without_stacks_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d, "0");
    let text = common::ok(&run(d, &["report", "t.atrace", "--json", "r.json"]));
    assert!(
        text.contains("Call sites: recorded without stacks (record --stack-depth"),
        "{text}"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(doc["call_sites"]["recorded"], false);
    assert_eq!(doc["workload"]["allocs"], 1001 + 5000 + 11 + 11);
}

#[test]
fn flame_graphs_are_files_and_frames_of_the_page_and_search_finds_a_function() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d, "64");
    common::ok(&run(d, &["report", "t.atrace", "-q", "-o", "out"]));
    for figure in ["bytes", "allocs", "peak", "leaked", "waste"] {
        let svg = std::fs::read_to_string(d.join(format!("out/flame-{figure}.svg"))).unwrap();
        assert!(svg.contains("keep_nodes"), "flame-{figure}.svg");
    }
    let html = std::fs::read_to_string(d.join("out/index.html")).unwrap();
    assert_eq!(
        html.matches("<iframe").count(),
        5,
        "one frame per flame graph"
    );
    assert_eq!(html.matches("src=\"data:image/svg+xml;base64,").count(), 5);
    assert!(html.contains("Call sites, bottom-up"));
    let Some(chrome) = common::chromium() else {
        return;
    };
    let (dom, console) = common::chromium_load(
        &chrome,
        &format!("file://{}", d.join("out/index.html").display()),
    );
    assert!(console.is_empty(), "{console:?}");
    assert!(dom.contains("Flame graphs"), "{dom}");
    assert!(
        dom.contains("<b>1.0 MiB</b><span>holds most at the peak: block</span>"),
        "key figures: {dom}"
    );
    // The tables sort in the page: by bytes (as written), and by waste when asked.
    let first_row = |dom: &str| -> String {
        let table = &dom[dom.find("data-name=\"call_sites_functions\"").unwrap()..];
        let rows: Vec<&str> = table.split("<tr>").collect();
        let cell = rows[2].split("</td>").next().unwrap();
        // The text of the first cell (a link to the flame graph).
        let text = cell.rsplit("\">").next().unwrap();
        text.trim_end_matches("</a>").to_string()
    };
    assert!(
        dom.contains("<a href=\"flame-bytes.svg?s=keep_nodes\""),
        "functions link to the flame graph: {dom}"
    );
    assert_eq!(first_row(&dom), "block");
    let url = format!(
        "file://{}#sort=call_sites_functions:waste_bytes",
        d.join("out/index.html").display()
    );
    let (dom, console) = common::chromium_load(&chrome, &url);
    assert!(console.is_empty(), "{console:?}");
    assert_eq!(first_row(&dom), "scratch", "sorted by waste");
    assert!(dom.contains("aria-sort=\"descending\""));
    // inferno's search, driven by the URL: keep_nodes allocated 108000 of the 1 485 352 bytes,
    // and holds all of the leaked bytes.
    for (figure, matched) in [("bytes", "Matched: 7.3%"), ("leaked", "Matched: 100%")] {
        let url = format!(
            "file://{}?s=keep_nodes",
            d.join(format!("out/flame-{figure}.svg")).display()
        );
        let (dom, console) = common::chromium_load(&chrome, &url);
        assert!(console.is_empty(), "{console:?}");
        assert!(dom.contains(matched), "flame-{figure}.svg: {dom}");
    }
}

#[test]
fn compare_lists_the_call_sites_that_grew_and_gates_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record_as(d, "64", "a.atrace", &[]);
    record_as(d, "64", "b.atrace", &["8000"]);
    for (t, j) in [("a.atrace", "a.json"), ("b.atrace", "b.json")] {
        common::ok(&run(d, &["report", t, "-q", "--json", j]));
    }
    // scratch made 3000 more temporaries of 33 bytes: 99 000 more bytes, 45 000 more waste.
    let o = run(
        d,
        &[
            "compare",
            "a.json",
            "b.json",
            "--fail-if",
            "site.scratch.bytes>+10%",
        ],
    );
    let md = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{md}");
    assert!(
        md.contains("| site.scratch.bytes | 165000 | 264000 | +99000 (+60.0%) | site.scratch.bytes>+10% | ❌ regression |"),
        "{md}"
    );
    let grew = |what: &str| -> String {
        md.split("#### Call sites whose ")
            .find(|s| s.starts_with(what))
            .unwrap_or_else(|| panic!("no section on {what}: {md}"))
            .to_string()
    };
    assert!(
        grew("bytes allocated").contains("| `scratch` | 165000 | 264000 |"),
        "{md}"
    );
    assert!(
        grew("size-class waste").contains("| `scratch` | 75000 | 120000 |"),
        "{md}"
    );
    assert!(
        grew("bytes live at the peak").contains("None grew."),
        "{md}"
    );
    // A gate that holds, and the page with differential flame graphs.
    let o = run(
        d,
        &[
            "compare",
            "a.json",
            "b.json",
            "--fail-if",
            "site.keep_nodes.bytes>+1%",
            "--html",
            "cmp.html",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let html = std::fs::read_to_string(d.join("cmp.html")).unwrap();
    let graph = |name: &str| -> String {
        use base64::Engine;
        let at = html
            .find(&format!("<figure id=\"flame-diff-{name}\">"))
            .unwrap_or_else(|| panic!("no flame-diff-{name}"));
        let data = html[at..].split("base64,").nth(1).unwrap();
        let data = &data[..data.find('"').unwrap()];
        let svg = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        String::from_utf8(svg).unwrap()
    };
    // A frame: its title (name, count in the new report, change) and its colour.
    let frame = |svg: &str, function: &str| -> (String, String) {
        let g = svg
            .split("<g>")
            .find(|g| g.contains(&format!("<title>{function} (")))
            .unwrap_or_else(|| panic!("no frame {function}"));
        let title = g.split("<title>").nth(1).unwrap();
        let fill = g.split("fill=\"").nth(1).unwrap();
        (
            title[..title.find('<').unwrap()].to_string(),
            fill[..fill.find('"').unwrap()].to_string(),
        )
    };
    // scratch grew: as wide as its new bytes, red; keep_nodes did not change: neither colour.
    let bytes = graph("bytes");
    let (title, fill) = frame(&bytes, "scratch");
    assert!(title.starts_with("scratch (264,000 bytes"), "{title}");
    assert!(
        fill.starts_with("rgb(255,") && fill != "rgb(255,255,255)",
        "{fill}"
    );
    assert_eq!(frame(&bytes, "keep_nodes").1, "rgb(250,250,250)");
    assert!(frame(&graph("waste"), "scratch").1.starts_with("rgb(255,"));
    assert_eq!(frame(&graph("peak"), "block").1, "rgb(250,250,250)");
    let Some(chrome) = common::chromium() else {
        return;
    };
    let (dom, console) =
        common::chromium_load(&chrome, &format!("file://{}", d.join("cmp.html").display()));
    assert!(console.is_empty(), "{console:?}");
    assert!(dom.contains("Flame graphs"), "{dom}");
    assert!(
        dom.contains("165000 → 264000") || dom.contains("allocated_bytes"),
        "{dom}"
    );
}

#[test]
fn go_tool_pprof_agrees_with_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d, "64");
    common::ok(&run(d, &["report", "t.atrace", "-q", "--json", "r.json"]));
    common::ok(&run(
        d,
        &[
            "export",
            "t.atrace",
            "--format",
            "pprof",
            "-o",
            "heap.pb.gz",
        ],
    ));
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    // pprof's flat figure of a function is what its own calls allocated: the bottom-up row.
    for (sample, key) in [
        ("alloc_space", "bytes"),
        ("alloc_objects", "allocs"),
        ("inuse_space", "leaked_bytes"),
    ] {
        let top = common::pprof_top(d, "heap.pb.gz", sample);
        for f in doc["call_sites"]["functions"].as_array().unwrap() {
            let name = f["function"].as_str().unwrap();
            let ours = f[key].as_u64().unwrap();
            assert_eq!(
                top.get(name).copied().unwrap_or(0),
                ours,
                "{sample} of {name}: {top:?}"
            );
        }
    }
}

#[test]
fn the_go_model_s_heap_at_its_peak_is_split_by_call_site() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d, "64");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(name)).unwrap()).unwrap()
    };
    let function = |doc: &Value, name: &str| -> Option<u64> {
        doc["call_sites"]["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .unwrap_or_else(|| panic!("no function {name}"))["go_heap_at_peak_bytes"]
            .as_u64()
    };
    // Without a GC nothing is swept: the peak is the end, every allocation in its slot.
    common::ok(&run(
        d,
        &[
            "replay", "t.atrace", "-q", "--gogc", "off", "--json", "off.json",
        ],
    ));
    common::ok(&run(
        d,
        &[
            "report", "t.atrace", "-q", "--replay", "off.json", "--json", "r.json", "--csv", "csv",
        ],
    ));
    let r = read("r.json");
    // keep_nodes: the 8000-byte array in an 8192-byte slot, 1000 nodes in 112-byte slots;
    // scratch: 5000 slots of 48 bytes (freed, never swept); grow: 64 B to 32 KiB in slots of
    // their own size, 64 KiB as 8 whole pages; block: 11 spans of 12 pages.
    let want = [
        ("keep_nodes", 8192 + 1000 * 112),
        ("scratch", 5000 * 48),
        ("grow", 65472 + 65536),
        ("block", 11 * 98304),
    ];
    for (name, bytes) in want {
        assert_eq!(function(&r, name), Some(bytes), "{name}");
    }
    let heap = &r["call_sites"]["go_heap_at_peak"];
    let held: u64 = want.iter().map(|w| w.1).sum();
    assert_eq!(
        heap["heap_inuse_bytes"].as_u64().unwrap(),
        held + heap["free_bytes"].as_u64().unwrap()
    );
    assert_eq!(heap["no_site_bytes"], 0);
    assert_eq!(
        heap["heap_inuse_bytes"],
        read("off.json")["model"]["peak"]["heap_inuse"]
    );
    assert_eq!(r["metrics"]["site.block.go_heap_at_peak_bytes"], 1081344.0);
    let csv = std::fs::read_to_string(d.join("csv/call_sites_functions.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains(",go_heap_at_peak_bytes,"));
    assert!(
        csv.lines()
            .any(|l| l.starts_with("scratch,") && l.contains(",240000,")),
        "{csv}"
    );

    // With the GC the peak comes earlier and carries garbage not yet swept: still all of it
    // split, and no site where the trace had none.
    common::ok(&run(d, &["replay", "t.atrace", "-q", "--json", "gc.json"]));
    let text = common::ok(&run(
        d,
        &[
            "report", "t.atrace", "--replay", "gc.json", "--json", "g.json", "-o", "out",
        ],
    ));
    let g = read("g.json");
    let heap = &g["call_sites"]["go_heap_at_peak"];
    let held: u64 = ["keep_nodes", "scratch", "grow", "block"]
        .iter()
        .map(|n| function(&g, n).unwrap())
        .sum();
    assert_eq!(
        heap["heap_inuse_bytes"].as_u64().unwrap(),
        held + heap["free_bytes"].as_u64().unwrap()
    );
    assert_eq!(
        heap["heap_inuse_bytes"],
        read("gc.json")["model"]["peak"]["heap_inuse"]
    );
    assert!(
        text.contains("Who holds the Go model's heap at its peak"),
        "{text}"
    );
    assert!(d.join("out/flame-go-heap.svg").exists());
    // A report without a replay has no such figure.
    assert_eq!(function(&read("r.json"), "block"), Some(1081344));
    common::ok(&run(
        d,
        &["report", "t.atrace", "-q", "--json", "plain.json"],
    ));
    assert_eq!(function(&read("plain.json"), "block"), None);
}
