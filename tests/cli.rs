//! The `percpu-bed` binary end to end: output, formats and exit codes
//! (0 as expected, 1 a check failed, 2 bad input or usage).

use std::path::Path;
use std::process::{Command, Output};

fn bed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_percpu-bed"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("percpu-bed runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_reports_weak_percpu_and_exits_zero() {
    let o = bed(&["inspect", "fixtures/obj/s390x/mod_basic.o"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("machine s390x (64-bit, big endian)"), "{out}");
    assert!(out.contains("R_390_GOTENT"), "{out}");
    assert!(out.contains("verdict: follows the module percpu rules"), "{out}");
}

#[test]
fn inspect_check_fails_a_module_without_weak_percpu() {
    let o = bed(&["inspect", "--check", "fixtures/obj/alpha/bug_noweak_module.o"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("alpha modules must define percpu variables weak"), "{out}");
    assert!(stderr(&o).contains("break their arch's module percpu rules"));
}

#[test]
fn inspect_json_is_valid_and_complete() {
    let o = bed(&["inspect", "--format", "json", "fixtures/obj/arm64/kernel.o"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let r = &v[0];
    assert_eq!(r["machine"], "aarch64");
    assert!(r["percpu_sections"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(r["test_descriptors"].as_u64().is_some_and(|n| n > 0));
}

#[test]
fn bad_input_is_a_clear_error_with_exit_two() {
    let dir = std::env::temp_dir().join(format!("percpu-bed-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read("fixtures/obj/x86_64/kernel.o").unwrap();
    let truncated = dir.join("truncated.o");
    std::fs::write(&truncated, &good[..100]).unwrap();
    let not_elf = dir.join("not_elf.o");
    std::fs::write(&not_elf, b"this is not an ELF file at all").unwrap();
    for (file, want) in [(&truncated, "truncated.o"), (&not_elf, "not_elf.o")] {
        let o = bed(&["inspect", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("percpu-bed: error: cannot inspect") && err.contains(want), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = bed(&["inspect", dir.join("missing.o").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(bed(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(bed(&["bench", "--objects", "0"]).status.code(), Some(2));
}

#[test]
fn bench_json_rows_carry_the_required_fields() {
    let o = bed(&["bench", "--objects", "2048", "--budget", "1", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let rows = v["rows"].as_array().unwrap();
    for alloc in ["bitmap", "areamap2014", "areamap", "bump"] {
        assert!(rows.iter().any(|r| r["allocator"] == alloc), "no {alloc} row");
    }
    for r in rows {
        for field in ["allocator", "size", "pattern", "alloc_ns_per_op", "free_ns_per_op"] {
            assert!(!r[field].is_null(), "row lacks {field}: {r}");
        }
    }
    assert!(v["targets"].as_array().is_some_and(|t| !t.is_empty()));
    let emulation = v["emulation"].as_array().unwrap();
    for arch in ["x86_64", "arm64", "sparc32", "alpha", "s390x", "km"] {
        let row = emulation.iter().find(|e| e["arch"] == arch).unwrap_or_else(|| panic!("no {arch} row"));
        assert!(row["error"].is_null(), "{arch}: {}", row["error"]);
        assert!(row["checks_per_sec"].as_f64().unwrap() > 0.0);
    }
    assert!(emulation.iter().any(|e| e["cpus"] == 4096 && e["error"].is_null()));
    assert!(Path::new(env!("CARGO_BIN_EXE_percpu-bed")).exists());
}

#[test]
fn run_shipped_fixtures_catches_every_planted_bug() {
    let o = bed(&["run", "--arch", "x86_64", "--cpus", "4", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["arch"], "x86_64");
    assert_eq!(v["counts"]["fail"], 0);
    assert!(v["counts"]["caught"].as_u64().unwrap() >= 3, "{}", v["counts"]);
    assert!(v["counts"]["pass"].as_u64().unwrap() >= 50, "{}", v["counts"]);
    // A caught planted bug carries its decoded diagnostic.
    let caught = v["tests"].as_array().unwrap().iter().find(|t| t["test"] == "tr_ptr_u32_far").expect("trunc32 test");
    assert_eq!(caught["status"], "caught");
    let text = caught["diagnostic"].to_string();
    assert!(text.contains("32-bit truncation"), "{text}");
}

#[test]
fn run_refuses_bad_input_with_exit_two() {
    // Running a bug object on an arch variant it was not built for is bad input.
    let o = bed(&["run", "--arch", "x86_64", "fixtures/obj/arm64/kernel.o"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("EM_AARCH64"), "{}", stderr(&o));
    let o = bed(&["run", "--arch", "vax"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown arch `vax`"), "{}", stderr(&o));
    let o = bed(&["run", "--arch", "arm64", "--variant", "el3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown variant `el3`"), "{}", stderr(&o));
    let o = bed(&["run", "--arch", "arm64", "--cpus", "2", "--possible", "0-3"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Issue 12 item 24: what the matrix refuses, `run`, `layout` and `map`
/// refuse too, and `layout` refuses what `run` cannot set up.
#[test]
fn impossible_topologies_are_refused_everywhere() {
    for cmd in ["run", "layout", "map"] {
        let o = bed(&[cmd, "--arch", "x86_64", "--nodes", "0"]);
        assert_eq!(o.status.code(), Some(2), "{cmd} --nodes 0: {}", stdout(&o));
        assert!(stderr(&o).contains("--nodes"), "{cmd}: {}", stderr(&o));
    }
    for cmd in ["run", "layout"] {
        let o = bed(&[cmd, "--arch", "km", "--nodes", "2"]);
        assert_eq!(o.status.code(), Some(2), "{cmd} km --nodes 2: {}", stdout(&o));
        assert!(stderr(&o).contains("percpu-km can't handle more than one group"), "{cmd}: {}", stderr(&o));
    }
}

#[test]
fn layout_prints_alloc_info_and_offsets() {
    let o = bed(&["layout", "--arch", "arm64", "--cpus", "8", "--nodes", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("pcpu-alloc: s"), "{out}");
    assert!(out.contains("__per_cpu_offset"), "{out}");
    assert!(out.contains("cpu 7:"), "{out}");
}

/// The real Debian 6.1 boot lines quoted in issue 11 and
/// shared/design/kernel-code.md, reproduced from the same inputs.
#[test]
fn layout_reproduces_real_6_1_boot_lines() {
    let lines = |args: &[&str]| -> Vec<String> {
        let o = bed(args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .filter(|l| l.starts_with("percpu:") || l.starts_with("pcpu-alloc:") || l.starts_with("setup_percpu:"))
            .map(str::to_string)
            .collect()
    };
    let x86 = lines(&["layout", "--arch", "x86_64", "--cpus", "1", "--static-size", "217088"]);
    assert_eq!(
        x86,
        [
            "setup_percpu: NR_CPUS:8192 nr_cpumask_bits:1 nr_cpu_ids:1 nr_node_ids:1",
            "percpu: Embedded 62 pages/cpu s217088 r8192 d28672 u2097152",
            "pcpu-alloc: s217088 r8192 d28672 u2097152 alloc=1*2097152",
            "pcpu-alloc: [0] 0 ",
        ]
    );
    let page =
        lines(&["layout", "--arch", "x86_64", "--cpus", "1", "--static-size", "217088", "--percpu-alloc", "page"]);
    assert_eq!(page[1], "percpu: 58 4K pages/cpu s217088 r8192 d12288");
    let arm = lines(&["layout", "--arch", "arm64", "--cpus", "1", "--static-size", "87272", "--percpu-alloc", "page"]);
    assert_eq!(arm[0], "percpu: 27 4K pages/cpu s87272 r8192 d15128");
    let arm = lines(&["layout", "--arch", "arm64", "--cpus", "1", "--static-size", "87272"]);
    assert_eq!(arm[0], "percpu: Embedded 31 pages/cpu s87272 r8192 d31512 u126976");
    // a later kernel: 20 KiB early size
    let later = lines(&[
        "layout",
        "--arch",
        "x86_64",
        "--kernel",
        "6.15",
        "--cpus",
        "1",
        "--static-size",
        "217088",
        "--percpu-alloc",
        "page",
    ]);
    assert_eq!(later[1], "percpu: 60 4K pages/cpu s217088 r8192 d20480");
}

/// Group base offsets where memblock puts them: a 2x1 GiB x86_64 boot has
/// its groups at 0x0 and 0x3fe00000 when node 1's top 2 MiB are taken
/// before setup_per_cpu_areas; a memoryless node's cpus take memory from
/// the top of all memory; a node whose memory is lower puts its group below
/// group 0.
#[test]
fn layout_places_groups_in_node_memory() {
    let groups = |args: &[&str]| -> Vec<String> {
        let o = bed(args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o).lines().filter(|l| l.starts_with("group ")).map(str::to_string).collect()
    };
    let base = ["layout", "--arch", "x86_64", "--cpus", "2", "--cpu-nodes", "0,1", "--static-size", "217088"];
    let g = groups(&[&base[..], &["--node-mem", "1G,1G", "--memblock-reserved", "0x7fe00000-0x7fffffff"]].concat());
    assert_eq!(
        g,
        ["group 0: base_offset 0x0, size 0x200000, node 0", "group 1: base_offset 0x3fe00000, size 0x200000, node 1"]
    );
    // node 1 memoryless: its group comes from the top of all memory (node 0)
    let g = groups(&[&base[..], &["--node-mem", "1G,0"]].concat());
    assert_eq!(
        g,
        ["group 0: base_offset 0x200000, size 0x200000, node 0", "group 1: base_offset 0x0, size 0x200000, node 1"]
    );
    // node 0's memory above node 1's: group 1 below group 0
    let g = groups(&[&base[..], &["--node-mem", "0x40000000-0x7fffffff;0-0x3fffffff"]].concat());
    assert_eq!(
        g,
        ["group 0: base_offset 0x40000000, size 0x200000, node 0", "group 1: base_offset 0x0, size 0x200000, node 1"]
    );
    let o = bed(&["layout", "--arch", "x86_64", "--kernel", "5.4"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("percpu-bed-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn matrix_writes_table_junit_and_ktap_and_exits_zero() {
    let dir = temp_dir("matrix");
    let (junit, ktap) = (dir.join("junit.xml"), dir.join("ktap.txt"));
    let o = bed(&[
        "matrix",
        "--arch",
        "x86_64/relative",
        "--arch",
        "s390x",
        "--filter",
        "cpus-2",
        "--filter",
        "modules-near",
        "--junit",
        junit.to_str().unwrap(),
        "--ktap",
        ktap.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("arch") && header.contains("cpus-2") && header.contains("modules-near"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("s390x/default") && l.trim_end().ends_with('l')), "{out}");
    assert!(out.contains("3 jobs (0 skipped)") && out.contains("all as expected"), "{out}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let suites: Vec<_> = doc.root_element().children().filter(|n| n.has_tag_name("testsuite")).collect();
    assert_eq!(suites.len(), 3);
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));
    let ktap = std::fs::read_to_string(&ktap).unwrap();
    assert!(ktap.starts_with("KTAP version 1\n"), "{ktap}");
    assert!(ktap.contains("\n1..2\n") && ktap.contains("\nok 1 x86_64\n") && ktap.contains("\nok 2 s390x\n"), "{ktap}");
    assert!(ktap.contains("# XFAIL planted bug caught") && ktap.contains("# SKIP planted bug latent"), "{ktap}");
}

#[test]
fn matrix_fails_with_a_precise_diagnostic_when_a_planted_bug_hides() {
    // Modules near the percpu area hide the missing-weak-percpu bug; without
    // declaring it latent the matrix must fail and say where and why.
    let dir = temp_dir("matrix-hide");
    let file = dir.join("matrix.toml");
    std::fs::write(
        &file,
        "[[arch]]\nname = \"s390x\"\n[[fixtures]]\nname = \"noweak\"\nobjects = [\"bug_noweak_module.o\"]\n\
         [[config]]\nname = \"near\"\ncpus = 2\nmodules = \"near\"\n",
    )
    .unwrap();
    let o = bed(&["matrix", "--matrix", file.to_str().unwrap(), "--format", "table"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("FAIL s390x/default:near (cpus 0-1, 1 node, modules near"), "{out}");
    assert!(out.contains("FAIL bug_noweak_module.o:nw_inc (planted bug)"), "{out}");
    assert!(out.contains("planted bug not caught: the test behaved on all 2 CPU(s) it ran on (0-1)"), "{out}");
    assert!(out.trim_end().ends_with("1 job UNEXPECTED"), "{out}");

    let o = bed(&["matrix", "--matrix", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let t = &v["jobs"][0]["tests"].as_array().unwrap().iter().find(|t| t["outcome"] == "fail").unwrap().clone();
    assert_eq!(t["diagnostic"]["arch"], "s390x");
    assert_eq!(t["diagnostic"]["findings"][0]["kind"], "not_caught");
}

#[test]
fn matrix_shards_split_the_jobs_deterministically() {
    let list = |extra: &[&str]| {
        let mut args = vec!["matrix", "--list"];
        args.extend_from_slice(extra);
        let o = bed(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o).lines().map(|l| l.split_whitespace().next().unwrap().to_string()).collect::<Vec<_>>()
    };
    let all = list(&[]);
    let mut parts = [list(&["--shard", "1/3"]), list(&["--shard", "2/3"]), list(&["--shard", "3/3"])].concat();
    assert!(all.len() > 40, "{all:?}");
    parts.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(parts, sorted);
    assert_eq!(list(&["--shard", "2/3"]), list(&["--shard", "2/3"]));
}

#[test]
fn matrix_bad_input_exits_two() {
    let dir = temp_dir("matrix-bad");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[[arch]]\nname = \"vax\"\n[[config]]\nname = \"c\"\ncpus = 1\n").unwrap();
    for (args, want) in [
        (vec!["matrix", "--matrix", file.to_str().unwrap()], "unknown arch `vax`"),
        (vec!["matrix", "--matrix", "/nonexistent/matrix.toml"], "cannot read the matrix file"),
        (vec!["matrix", "--filter", "no-such-config"], "no job of"),
        (vec!["matrix", "--shard", "4/3"], "need 1 <= I <= N"),
    ] {
        let o = bed(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn map_after_a_run_writes_an_svg_file() {
    let dir = std::env::temp_dir().join(format!("percpu-bed-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("x86.svg");
    let o = bed(&["map", "--arch", "x86_64", "--possible", "0-2,8-9", "--nodes", "2", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "the SVG goes to the file only");
    let svg = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let chunks = doc.descendants().filter(|n| n.attribute("class") == Some("chunk")).count();
    assert!(chunks >= 2, "first and reserved chunk at least");
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(text.contains("x86_64/zero-based · cpus 0-2,8-9 (5 possible, 2 nodes)"), "{text}");
    assert!(text.contains("0 fail, 0 error"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn map_of_a_workload_goes_to_stdout_as_svg_or_json() {
    let o = bed(&["map", "--workload", "second-half-filled-64", "--objects", "512"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let svg = stdout(&o);
    assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert!(svg.contains("workload second-half-filled-64 · 512 objects"));

    let o = bed(&["map", "--workload", "in-order-4", "--objects", "100", "--phase", "allocated", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let first = &v["chunks"][0];
    assert_eq!(first["role"], "first");
    let allocated: u64 =
        first["pages"].as_array().unwrap().iter().map(|p| p["allocated_bytes"].as_u64().unwrap()).sum();
    assert_eq!(allocated, 400, "100 four-byte objects, not freed yet");
    assert_eq!(v["units"].as_array().unwrap().len(), 4);
}

#[test]
fn map_refuses_bad_input_with_exit_two() {
    let o = bed(&["map", "--workload", "in-order-3"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown workload `in-order-3`") && err.contains("random-half-freed"), "{err}");
    let o = bed(&["map", "--arch", "vax"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown arch `vax`"), "{}", stderr(&o));
    for args in [
        &["map"][..],
        &["map", "--arch", "x86_64", "--workload", "in-order-4"],
        &["map", "--workload", "in-order-4", "--objects", "0"],
        &["map", "--workload", "in-order-4", "--max-units", "0"],
        &["map", "--workload", "in-order-4", "--cpus", "8"],
        &["map", "--arch", "x86_64", "--phase", "allocated"],
        &["map", "--workload", "in-order-4", "-o", "/nonexistent-dir/map.svg"],
    ] {
        let o = bed(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    let o = bed(&["map", "--help"]);
    assert!(stdout(&o).contains("random-half-freed"), "--help lists the workloads");
}

#[test]
fn compressed_objects_are_read_and_special_files_refused() {
    let dir = temp_dir("compressed");
    let plain = std::fs::read("fixtures/obj/x86_64/mod_basic.o").unwrap();
    let zst = dir.join("mod_basic.o.zst");
    std::fs::write(&zst, zstd::encode_all(plain.as_slice(), 3).unwrap()).unwrap();
    let xz = dir.join("mod_basic.o.xz");
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    std::fs::write(&xz, enc.finish().unwrap()).unwrap();

    let o = bed(&["inspect", zst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("machine x86_64"), "{}", stdout(&o));
    let o = bed(&["run", "--arch", "x86_64", "--cpus", "2", "fixtures/obj/x86_64/kernel.o", xz.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("PASS    mod_basic.o:"), "{}", stdout(&o));

    let fifo = dir.join("fifo.ko");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for args in [vec!["inspect", fifo.to_str().unwrap()], vec!["run", "--arch", "x86_64", fifo.to_str().unwrap()]] {
        let o = bed(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("not a regular file (a FIFO)"), "{}", stderr(&o));
    }
    let o = bed(&["inspect", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a regular file (a character device)"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn one_set_of_arch_names_everywhere() {
    for (arch, header) in [
        (vec!["--arch", "riscv64"], "km/default on cpus"),
        (vec!["--arch", "x86_64-rel"], "x86_64/relative on cpus"),
        (vec!["--arch", "arm64/el2"], "arm64/el2 on cpus"),
        (vec!["--arch", "arm64-vhe", "--variant", "el2"], "arm64/el2 on cpus"),
    ] {
        let mut args = vec!["run", "--cpus", "1"];
        args.extend(&arch);
        let o = bed(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).starts_with(header), "{args:?}: {}", stdout(&o));
    }
    let o = bed(&["run", "--arch", "arm64-vhe", "--variant", "el1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("contradicts --variant el1"), "{}", stderr(&o));
    let o = bed(&["matrix", "--arch", "x86_64-rel", "--filter", "cpus-1", "--list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("x86_64/relative:cpus-1"), "{}", stdout(&o));
}

#[test]
fn help_describes_every_format_and_the_matrix_schema() {
    for cmd in ["run", "matrix", "inspect", "bench", "map", "kbuild"] {
        let o = bed(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0));
        let help = stdout(&o);
        let at = help.find("--format").unwrap_or_else(|| panic!("{cmd}: no --format"));
        let line = help[at..].lines().next().unwrap();
        let next = help[at..].lines().nth(1).unwrap_or("");
        assert!(
            line.split("  ").filter(|w| !w.trim().is_empty()).count() > 1 || !next.trim().starts_with('-'),
            "{cmd}: {line}"
        );
        assert!(!help.contains(".rs"), "{cmd} --help names a source file: {help}");
    }
    let schema = stdout(&bed(&["matrix", "--help"]));
    for key in ["[[arch]]", "[[fixtures]]", "[[config]]", "sample_cpus", "latent", "skip"] {
        assert!(schema.contains(key), "matrix --help lacks {key}");
    }
    let o = bed(&["matrix", "--arch", "riscv64", "--filter", "nothing-matches"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("matches --arch riscv64 --filter nothing-matches") && !e.contains("[\""), "{e}");
}

#[test]
fn readme_synopsis_names_every_flag_of_every_command() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("## Commands\n").expect("a Commands section");
    let synopsis = &readme[start..start + readme[start..].find("\n```\n\n").expect("a synopsis block")];
    for cmd in ["matrix", "run", "layout", "inspect", "bench", "map", "kbuild", "completions", "man"] {
        let help = stdout(&bed(&[cmd, "--help"]));
        for word in help.split_whitespace() {
            let flag = word.trim_end_matches([',', '.']);
            let flag = flag.split('=').next().unwrap();
            if flag.starts_with("--") && flag.len() > 2 && flag[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                assert!(synopsis.contains(flag), "README synopsis lacks `percpu-bed {cmd} {flag}`");
            }
        }
    }
}
