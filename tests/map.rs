//! `percpu-bed map`'s SVG: golden pictures of deterministic allocator
//! states, and structure checked with a real XML parser.  Re-bless the
//! goldens (and the README's example) with `PERCPU_BLESS=1 cargo test
//! --test map` after an intended change, then look at them.

use std::collections::HashSet;
use std::path::PathBuf;

use percpu_bed::bench::{Phase, Workload};
use percpu_bed::map::{self, MapOptions};
use percpu_core::percpu::{ChunkMapView, Percpu, PercpuConfig};
use percpu_core::{AddressSpace, AllocRequest, CpuSet, Topology};

fn check_golden(rel: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    if std::env::var_os("PERCPU_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with PERCPU_BLESS=1 to create it)", path.display()));
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(e, a)| e != a);
        let line = first.map_or_else(
            || "(only the length differs)".to_string(),
            |i| {
                format!(
                    "line {}:\n  golden: {}\n  actual: {}",
                    i + 1,
                    expected.lines().nth(i).unwrap(),
                    actual.lines().nth(i).unwrap()
                )
            },
        );
        panic!(
            "{} differs from the golden file ({} vs {} lines), first difference at {line}\n(re-bless with PERCPU_BLESS=1 if intended)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
        );
    }
}

/// Parse `svg` and check what every map must have; returns the chunk
/// groups' ids.
fn check_structure(svg: &str, view: &ChunkMapView) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    for attr in ["width", "height", "viewBox"] {
        assert!(root.attribute(attr).is_some(), "svg lacks {attr}");
    }
    let title = root.children().find(|n| n.has_tag_name("title")).expect("a <title>");
    assert!(!title.text().unwrap_or("").is_empty());

    let legend: Vec<_> = doc.descendants().filter(|n| n.attribute("id") == Some("legend")).collect();
    assert_eq!(legend.len(), 1, "one legend");
    let swatches = legend[0].children().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(swatches, 7, "allocated, free, unpopulated, static, reserved, outside, no CPU");
    let legend_text: String = legend[0].descendants().filter_map(|n| n.text()).collect();
    for word in ["allocated", "unpopulated", "static", "reserved", "Columns are units"] {
        assert!(legend_text.contains(word), "legend lacks {word}");
    }

    // One group per chunk, in id order, each with its label.
    let chunks: Vec<_> =
        doc.descendants().filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("chunk")).collect();
    assert_eq!(chunks.len(), view.chunks.len());
    for (g, c) in chunks.iter().zip(&view.chunks) {
        assert_eq!(g.attribute("data-chunk"), Some(c.id.to_string().as_str()));
        let text: String = g.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).collect();
        assert!(text.contains(&format!("chunk {}", c.id)), "{text}");
        assert!(text.contains(&format!("free {} B", c.free_bytes)), "{text}");
        assert!(text.contains(&format!("contig hint {} B", c.contig_bytes)), "{text}");
    }

    // Every <use> points at a defined unit column; every id is unique.
    let mut ids = HashSet::new();
    for n in doc.descendants().filter_map(|n| n.attribute("id")) {
        assert!(ids.insert(n.to_string()), "duplicate id {n}");
    }
    for u in doc.descendants().filter(|n| n.has_tag_name("use")) {
        let href = u.attribute("href").expect("href");
        assert!(ids.contains(href.trim_start_matches('#')), "dangling {href}");
    }
    chunks.iter().map(|g| g.attribute("id").unwrap().to_string()).collect()
}

#[test]
fn workload_map_matches_golden_and_parses() {
    let w = Workload::parse("random-half-freed").unwrap();
    let p = w.run(2048, Phase::End);
    let view = p.chunk_map();
    let svg = map::render(&view, &MapOptions::new("percpu chunk map · workload random-half-freed · 2048 objects"));
    let ids = check_structure(&svg, &view);
    assert_eq!(ids[0], "chunk-0");
    check_golden("tests/golden/map_random-half-freed_2048.svg", &svg);
}

/// 40 CPUs on 4 nodes in 2 MiB atoms of 512 KiB units: groups, units
/// without a CPU, more units than are drawn, a backend chunk.
#[test]
fn numa_map_with_capped_units_matches_golden() {
    let possible = CpuSet::parse_list("0-9,16-25,32-41,48-57").unwrap();
    let mut cfg = PercpuConfig::generic(AddressSpace::generic64(), Topology::blocked(possible, 4), 0x2c000);
    cfg.atom_size = 2 << 20;
    let mut p = Percpu::new(cfg).unwrap();
    let mut live = Vec::new();
    for i in 0..200usize {
        live.push(p.alloc(AllocRequest::new([8, 256, 3000, 64][i % 4], [8, 64, 4096, 8][i % 4])).unwrap());
    }
    for (i, ptr) in live.into_iter().enumerate() {
        if i % 3 == 0 {
            p.free(ptr).unwrap();
        }
    }
    p.alloc(AllocRequest::new(1200, 64).reserved()).unwrap();
    let view = p.chunk_map();
    assert!(view.units.iter().any(|u| u.cpu.is_none()), "some unit has no CPU");
    assert!(view.chunks.len() >= 3);
    let mut opts = MapOptions::new("percpu chunk map · 40 CPUs on 4 nodes <test & golden>");
    opts.notes.push("a note with \"quotes\" & <markup>".into());
    let svg = map::render(&view, &opts);
    check_structure(&svg, &view);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(text.contains("40 CPUs on 4 nodes <test & golden>"), "title text survives escaping");
    let hidden = view.units.len() - 16;
    assert!(text.contains(&format!("... {hidden} more units")), "{text}");
    // Every group shows when units are capped.
    for g in 0..view.groups.len() {
        assert!(text.contains(&format!("g{g}")), "group {g} is drawn");
    }
    check_golden("tests/golden/map_40cpu_4node.svg", &svg);
}

/// The README's example is what its command draws
/// (`percpu-bed map --workload random-half-freed -o docs/map-example.svg`).
#[test]
fn readme_example_is_current() {
    let (view, opts) = map::workload_map(Workload::parse("random-half-freed").unwrap(), 4096, Phase::End);
    let svg = map::render(&view, &opts);
    check_structure(&svg, &view);
    check_golden("docs/map-example.svg", &svg);
}
