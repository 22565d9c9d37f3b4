//! `percpu-bed map`: draw a [`ChunkMapView`] as an SVG picture, the one a
//! person wants beside `/sys/kernel/debug/percpu_stats`.
//!
//! Every chunk is a panel: a grid whose columns are the chunk's units and
//! whose rows are the pages of a unit.  All units of a chunk share its
//! allocation and population state (as in the kernel), so a unit column is
//! drawn once per chunk (`<defs>`) and placed in every unit (`<use>`); only
//! units without a CPU, which are never backed, look different.  A cell's
//! colours give the share of the page's bytes that are allocated, free,
//! unpopulated, static, reserved or another chunk's, not where in the page
//! they lie.  At most [`MapOptions::max_units`] units are drawn per chunk;
//! the rest are counted under the grid.
//!
//! The SVG is written by hand through a small writer that escapes every
//! text and attribute value; the output is deterministic (golden files).

use std::fmt::{self, Write as _};

use percpu_arch::check::{self, CheckError, Scenario, ScenarioReport};
use percpu_core::percpu::{ChunkMapView, ChunkRole, ChunkView, PageView, SlotList};
use percpu_core::PercpuAllocator;

use crate::bench::{Phase, Workload};
use crate::scenario::Object;

/// What to draw around the chunks.
#[derive(Clone, Debug)]
pub struct MapOptions {
    /// The picture's title (arch and CPUs, or the workload).
    pub title: String,
    /// Extra lines under the title (e.g. the run's results).
    pub notes: Vec<String>,
    /// Units drawn per chunk; more are summarised as "... N more units".
    pub max_units: usize,
}

impl MapOptions {
    pub fn new(title: impl Into<String>) -> Self {
        MapOptions { title: title.into(), notes: Vec::new(), max_units: DEFAULT_MAX_UNITS }
    }
}

/// Units drawn per chunk by default.
pub const DEFAULT_MAX_UNITS: usize = 16;

/// Run a benchmark workload ([`Workload::run`]) and title its map.
pub fn workload_map(workload: Workload, objects: usize, phase: Phase) -> (ChunkMapView, MapOptions) {
    let p = workload.run(objects, phase);
    let stop = match phase {
        Phase::End => "at its end",
        Phase::Allocated => "after its allocations",
    };
    let mut opts = MapOptions::new(format!("percpu chunk map · workload {} · {objects} objects", workload.name()));
    opts.notes.push(format!(
        "bitmap allocator in the bench geometry (x86_64-like, 4 CPUs), drawn {stop}: {} objects live, {} bytes",
        p.global_stats().nr_cur_alloc,
        p.footprint().allocated_bytes
    ));
    (p.chunk_map(), opts)
}

/// Run a scenario like `percpu-bed run` ([`check::run_with_map`]) and
/// title the map of the allocator's final state.
// CheckError is large; it is the cold path, as in percpu-arch.
#[allow(clippy::result_large_err)]
pub fn run_map(
    scenario: &Scenario,
    kernel: &Object,
    modules: &[Object],
) -> Result<(ChunkMapView, MapOptions, ScenarioReport), CheckError> {
    run_map_observed(scenario, kernel, modules, &mut ())
}

/// [`run_map`], telling `observer` about every test (for a progress bar).
pub fn run_map_observed(
    scenario: &Scenario,
    kernel: &Object,
    modules: &[Object],
    observer: &mut dyn check::Observer,
) -> Result<(ChunkMapView, MapOptions, ScenarioReport), CheckError> {
    let module_refs: Vec<(&str, &[u8])> = modules.iter().map(|m| (m.name.as_str(), m.bytes.as_slice())).collect();
    let (report, view) = check::run_with_map_observed(scenario, (&kernel.name, &kernel.bytes), &module_refs, observer)?;
    let mut opts = MapOptions::new(format!(
        "percpu chunk map · {}/{} · cpus {} ({} possible, {} node{})",
        report.arch,
        report.variant,
        report.cpus,
        report.nr_possible,
        report.nodes,
        if report.nodes == 1 { "" } else { "s" }
    ));
    let c = report.counts;
    opts.notes.push(format!(
        "after running {} and {} module(s), modules {}: {} pass, {} caught, {} fail, {} error",
        kernel.name,
        modules.len(),
        report.placement,
        c.pass,
        c.caught,
        c.fail,
        c.error
    ));
    Ok((view, opts, report))
}

/// Colours, in the order a cell's parts are drawn left to right.
const STATIC: &str = "#7b8fc4";
const RESERVED: &str = "#b07cc6";
const ALLOCATED: &str = "#e6550d";
const FREE: &str = "#a1d99b";
const UNPOPULATED: &str = "#e8e8e8";
const OTHER: &str = "#f3e3a6";
const INK: &str = "#222";
const MUTED: &str = "#666";

/// Layout in pixels.
const MARGIN: f64 = 16.0;
const MAX_WIDTH: f64 = 1400.0;
const COL_W: f64 = 14.0;
const COL_GAP: f64 = 2.0;
const GROUP_GAP: f64 = 5.0;
const GUTTER: f64 = 40.0;
const PANEL_MIN_W: f64 = 270.0;
const PANEL_GAP: f64 = 28.0;
const LINE: f64 = 14.0;
const GRID_TARGET_H: usize = 640;

/// A number in SVG: integers as such, otherwise two decimals at most.
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = (self.0 * 100.0).round() / 100.0;
        if v == v.trunc() {
            write!(f, "{}", v as i64)
        } else {
            let s = format!("{v:.2}");
            f.write_str(s.trim_end_matches('0'))
        }
    }
}

/// Escape text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A minimal SVG writer: elements with escaped attributes, indented.
struct Svg {
    out: String,
    depth: usize,
}

type Attrs<'a> = &'a [(&'a str, &'a dyn fmt::Display)];

impl Svg {
    fn new() -> Self {
        Svg { out: String::new(), depth: 0 }
    }

    fn start_tag(&mut self, name: &str, attrs: Attrs) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"{}\"", escape(&v.to_string()));
        }
    }

    /// `<name attrs>`; close with [`Svg::close`].
    fn open(&mut self, name: &str, attrs: Attrs) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        let _ = writeln!(self.out, "</{name}>");
    }

    /// `<name attrs/>`.
    fn leaf(&mut self, name: &str, attrs: Attrs) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// `<name attrs>text</name>`.
    fn text_el(&mut self, name: &str, attrs: Attrs, text: &str) {
        self.start_tag(name, attrs);
        let _ = writeln!(self.out, ">{}</{name}>", escape(text));
    }

    fn text(&mut self, x: f64, y: f64, size: f64, attrs: Attrs, text: &str) {
        let (x, y, size) = (Num(x), Num(y), Num(size));
        let mut all: Vec<(&str, &dyn fmt::Display)> = vec![("x", &x), ("y", &y), ("font-size", &size)];
        all.extend_from_slice(attrs);
        self.text_el("text", &all, text);
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str) {
        self.leaf("rect", &[("x", &Num(x)), ("y", &Num(y)), ("width", &Num(w)), ("height", &Num(h)), ("fill", &fill)]);
    }
}

/// "4 KiB", "512 KiB", "2 MiB", or bytes when not a whole KiB.
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn role_name(role: ChunkRole) -> &'static str {
    match role {
        ChunkRole::First => "first",
        ChunkRole::Reserved => "reserved",
        ChunkRole::Dynamic => "dynamic",
    }
}

fn slot_text(c: &ChunkView) -> String {
    let iso = if c.isolated { ", isolated" } else { "" };
    match (c.slot, c.slot_list) {
        (Some(s), Some(SlotList::Size) | None) => format!("slot {s}{iso}"),
        (Some(s), Some(SlotList::Free)) => format!("slot {s}: free{iso}"),
        (Some(s), Some(SlotList::Sidelined)) => format!("slot {s}: sidelined{iso}"),
        (Some(s), Some(SlotList::ToDepopulate)) => format!("slot {s}: to_depopulate{iso}"),
        (None, _) if c.role == ChunkRole::Reserved => "no slot: reserved requests only".into(),
        (None, _) => format!("on no slot{iso}"),
    }
}

/// The parts of a page in drawing order: (bytes, colour).
fn parts(p: &PageView) -> [(usize, &'static str); 5] {
    let free = if p.populated { FREE } else { UNPOPULATED };
    [
        (p.static_bytes, STATIC),
        (p.reserved_bytes, RESERVED),
        (p.allocated_bytes, ALLOCATED),
        (p.free_bytes, free),
        (p.other_bytes, OTHER),
    ]
}

/// Which units a panel draws: all of them up to `max`; beyond, the first
/// units of every group in turn, so each NUMA group shows.
struct Columns {
    /// (unit index, x offset inside the grid)
    drawn: Vec<(usize, f64)>,
    width: f64,
    hidden: usize,
    hidden_without_cpu: usize,
}

fn columns(view: &ChunkMapView, max: usize) -> Columns {
    let max = max.max(1);
    let picked: Vec<usize> = if view.units.len() <= max {
        (0..view.units.len()).collect()
    } else {
        let quota = (max / view.groups.len().max(1)).max(1);
        let mut picked = Vec::new();
        for g in &view.groups {
            let take = quota.min(g.nr_units).min(max - picked.len());
            picked.extend(g.first_unit..g.first_unit + take);
        }
        picked
    };
    let mut drawn = Vec::new();
    let mut x = 0.0;
    let mut last_group = None;
    for &unit in &picked {
        let group = view.units[unit].group;
        if last_group.is_some_and(|g| g != group) {
            x += GROUP_GAP;
        }
        last_group = Some(group);
        drawn.push((unit, x));
        x += COL_W;
    }
    let without_cpu = |units: &mut dyn Iterator<Item = usize>| units.filter(|&u| view.units[u].cpu.is_none()).count();
    let hidden_without_cpu = without_cpu(&mut (0..view.units.len())) - without_cpu(&mut picked.iter().copied());
    Columns { drawn, width: (x - COL_GAP).max(0.0), hidden: view.units.len() - picked.len(), hidden_without_cpu }
}

/// Page label step: a power of two leaving at least 12 px between labels.
fn label_step(row_h: f64) -> usize {
    let mut step = 1;
    while (step as f64) * row_h < 12.0 {
        step *= 2;
    }
    step
}

struct Panel<'a> {
    chunk: &'a ChunkView,
    x: f64,
    y: f64,
    width: f64,
}

const HEADER_LINES: usize = 6;
/// Room for the rotated CPU numbers above the grid.
const HEAD_H: f64 = 30.0;

/// Draw `view` as a standalone SVG document.
pub fn render(view: &ChunkMapView, opts: &MapOptions) -> String {
    let cols = columns(view, opts.max_units);
    let max_pages = view.chunks.iter().map(|c| c.pages.len()).max().unwrap_or(1).max(1);
    let row_h = (GRID_TARGET_H / max_pages).clamp(2, 14) as f64;
    let step = label_step(row_h);

    // Header: title, summary, notes, legend.
    let summary = format!(
        "unit {} = {} pages of {} · static {} B · reserved {} B · dynamic {} B · {} first chunk, {} backend",
        size(view.unit_size),
        view.unit_pages,
        size(view.page_size),
        view.static_size,
        view.reserved_size,
        view.dyn_size,
        match view.first_chunk_kind {
            percpu_core::first_chunk::FirstChunkKind::Embed => "embed",
            percpu_core::first_chunk::FirstChunkKind::Page => "page",
        },
        match view.backend {
            percpu_core::backend::BackendKind::Vm => "vm",
            percpu_core::backend::BackendKind::Km => "km",
        },
    );
    let with_cpu = view.units.iter().filter(|u| u.cpu.is_some()).count();
    let summary2 = format!(
        "{} chunks · {} units in {} groups ({} with a CPU) · {} populated pages per unit · {} empty populated pages",
        view.chunks.len(),
        view.units.len(),
        view.groups.len(),
        with_cpu,
        view.nr_populated,
        view.nr_empty_pop_pages
    );
    let mut y = MARGIN + 18.0;
    let title_y = y;
    y += 8.0;
    let text_lines: Vec<String> = [summary, summary2].into_iter().chain(opts.notes.iter().cloned()).collect();
    let lines_y = y + LINE;
    y += LINE * text_lines.len() as f64 + 10.0;
    let legend_y = y;
    let legend_h = legend_height();
    y += legend_h + 14.0;

    // Panels, flowing left to right.
    let grid_top = LINE * HEADER_LINES as f64 + 8.0 + 12.0 + HEAD_H;
    let mut panels = Vec::new();
    let (mut x, mut row_h_max) = (MARGIN, 0.0f64);
    for c in &view.chunks {
        let width = (GUTTER + cols.width + 12.0).max(PANEL_MIN_W);
        let foot = if cols.hidden > 0 { 2.0 * LINE } else { LINE };
        let height = grid_top + c.pages.len() as f64 * row_h + foot;
        if x > MARGIN && x + width > MAX_WIDTH {
            x = MARGIN;
            y += row_h_max + PANEL_GAP;
            row_h_max = 0.0;
        }
        panels.push(Panel { chunk: c, x, y, width });
        x += width + PANEL_GAP;
        row_h_max = row_h_max.max(height);
    }
    let total_h = y + row_h_max + MARGIN;
    let total_w = panels.iter().map(|p| p.x + p.width).fold(LEGEND_WIDTH + 40.0, f64::max) + MARGIN;

    let mut svg = Svg::new();
    svg.out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let (w, h) = (Num(total_w), Num(total_h));
    let vb = format!("0 0 {w} {h}");
    svg.open(
        "svg",
        &[
            ("xmlns", &"http://www.w3.org/2000/svg"),
            ("xmlns:xlink", &"http://www.w3.org/1999/xlink"),
            ("width", &w),
            ("height", &h),
            ("viewBox", &vb),
            ("font-family", &"DejaVu Sans, Verdana, Arial, sans-serif"),
        ],
    );
    svg.text_el("title", &[], &opts.title);
    svg.text_el("desc", &[], "percpu chunk map drawn by percpu-bed map");
    defs(&mut svg, view, row_h);
    svg.rect(0.0, 0.0, total_w, total_h, "#ffffff");

    svg.open("g", &[("id", &"header")]);
    svg.text(MARGIN, title_y, 18.0, &[("font-weight", &"bold"), ("fill", &INK)], &opts.title);
    for (i, line) in text_lines.iter().enumerate() {
        svg.text(MARGIN, lines_y + i as f64 * LINE, 11.0, &[("fill", &MUTED)], line);
    }
    svg.close("g");

    legend(&mut svg, MARGIN, legend_y);

    for p in &panels {
        panel(&mut svg, view, &cols, p, row_h, step, grid_top);
    }
    svg.close("svg");
    svg.out
}

/// Hatch patterns and one unit column per chunk.
fn defs(svg: &mut Svg, view: &ChunkMapView, row_h: f64) {
    svg.open("defs", &[]);
    svg.open("pattern", &[("id", &"nocpu"), ("width", &6), ("height", &6), ("patternUnits", &"userSpaceOnUse")]);
    svg.rect(0.0, 0.0, 6.0, 6.0, "#ffffff");
    svg.leaf("path", &[("d", &"M0,6 L6,0 M-1,1 L1,-1 M5,7 L7,5"), ("stroke", &"#999"), ("stroke-width", &1)]);
    svg.close("pattern");
    let col_w = COL_W - COL_GAP;
    for c in &view.chunks {
        let id = format!("unit-col-{}", c.id);
        svg.open("g", &[("id", &id)]);
        // One set of rects per run of identical pages.
        let mut i = 0;
        while i < c.pages.len() {
            let mut j = i + 1;
            while j < c.pages.len() && c.pages[j] == c.pages[i] {
                j += 1;
            }
            let y = i as f64 * row_h;
            let h = (j - i) as f64 * row_h;
            let total = c.pages[i].total().max(1) as f64;
            let mut x = 0.0;
            for (bytes, colour) in parts(&c.pages[i]) {
                if bytes == 0 {
                    continue;
                }
                let w = col_w * bytes as f64 / total;
                svg.rect(x, y, w, h, colour);
                x += w;
            }
            i = j;
        }
        svg.close("g");
    }
    svg.close("defs");
}

/// The legend's swatches.
const LEGEND: [(&str, &str); 7] = [
    (ALLOCATED, "allocated"),
    (FREE, "free, populated"),
    (UNPOPULATED, "free, unpopulated"),
    (STATIC, "static (kernel image)"),
    (RESERVED, "reserved region (module percpu)"),
    (OTHER, "outside this chunk's region"),
    ("url(#nocpu)", "unit without a CPU (never backed)"),
];

const LEGEND_NOTES: [&str; 3] = [
    "Columns are units (CPU number on top, grouped by NUMA group); all units of a chunk share its allocation and \
     population state, as in the kernel.",
    "Rows are pages of a unit (page number at left). A cell's colours give the share of the page's bytes, not where \
     in the page they lie.",
    "The first chunk is drawn from pcpu_base_addr: static area, reserved region (served by the reserved chunk), \
     then its own map from base_addr.",
];

/// Where each swatch goes: (x, row), wrapping at `width`.
fn legend_layout(width: f64) -> Vec<(f64, usize)> {
    let (mut x, mut row) = (0.0, 0);
    LEGEND
        .iter()
        .map(|(_, label)| {
            let w = 16.0 + 6.4 * label.chars().count() as f64 + 18.0;
            if x > 0.0 && x + w > width {
                x = 0.0;
                row += 1;
            }
            let at = (x, row);
            x += w;
            at
        })
        .collect()
}

const LEGEND_WIDTH: f64 = 900.0;

fn legend_height() -> f64 {
    let rows = legend_layout(LEGEND_WIDTH).last().map_or(1, |&(_, r)| r + 1);
    rows as f64 * 18.0 + LEGEND_NOTES.len() as f64 * LINE
}

fn legend(svg: &mut Svg, x: f64, y: f64) {
    svg.open("g", &[("id", &"legend"), ("class", &"legend")]);
    for ((colour, label), (lx, row)) in LEGEND.iter().zip(legend_layout(LEGEND_WIDTH)) {
        let (sx, sy) = (x + lx, y + row as f64 * 18.0);
        svg.leaf(
            "rect",
            &[
                ("x", &Num(sx)),
                ("y", &Num(sy)),
                ("width", &12),
                ("height", &12),
                ("fill", colour),
                ("stroke", &"#888"),
                ("stroke-width", &0.5),
            ],
        );
        svg.text(sx + 16.0, sy + 10.0, 11.0, &[("fill", &INK)], label);
    }
    let rows = legend_layout(LEGEND_WIDTH).last().map_or(1, |&(_, r)| r + 1);
    for (i, n) in LEGEND_NOTES.iter().enumerate() {
        svg.text(x, y + rows as f64 * 18.0 + 8.0 + i as f64 * LINE, 11.0, &[("fill", &MUTED)], n);
    }
    svg.close("g");
}

fn panel(svg: &mut Svg, view: &ChunkMapView, cols: &Columns, p: &Panel, row_h: f64, step: usize, grid_top: f64) {
    let c = p.chunk;
    let id = format!("chunk-{}", c.id);
    let role = role_name(c.role);
    let transform = format!("translate({},{})", Num(p.x), Num(p.y));
    svg.open(
        "g",
        &[("id", &id), ("class", &"chunk"), ("data-chunk", &c.id), ("data-role", &role), ("transform", &transform)],
    );
    let map_pages = c.pages.len() - (c.map_page - c.first_page);
    let summary = format!(
        "chunk {} ({role}): {}, free {} B, contig hint {} B, {} allocations",
        c.id,
        slot_text(c),
        c.free_bytes,
        c.contig_bytes,
        c.nr_alloc
    );
    svg.text_el("title", &[], &summary);

    // Labels.
    let lines = [
        slot_text(c),
        format!("free {} B · contig hint {} B", c.free_bytes, c.contig_bytes),
        format!(
            "{} allocation{} · largest ever {} B",
            c.nr_alloc,
            if c.nr_alloc == 1 { "" } else { "s" },
            c.max_alloc_size
        ),
        format!("populated {}/{} pages · {} empty", c.nr_populated, map_pages, c.nr_empty_pop_pages),
        format!("base_addr {:#x}", c.base_addr),
    ];
    svg.text(0.0, LINE, 13.0, &[("font-weight", &"bold"), ("fill", &INK)], &format!("chunk {} · {role}", c.id));
    for (i, l) in lines.iter().enumerate() {
        svg.text(0.0, LINE * (i + 2) as f64, 11.0, &[("fill", &MUTED)], l);
    }

    let gx = GUTTER;
    let gy = grid_top;
    let grid_h = c.pages.len() as f64 * row_h;
    let col_w = COL_W - COL_GAP;

    // Group bars and unit headers.
    let bar_y = gy - HEAD_H - 12.0;
    let mut g = 0;
    while g < cols.drawn.len() {
        let group = view.units[cols.drawn[g].0].group;
        let mut e = g;
        while e + 1 < cols.drawn.len() && view.units[cols.drawn[e + 1].0].group == group {
            e += 1;
        }
        let (x0, x1) = (gx + cols.drawn[g].1, gx + cols.drawn[e].1 + col_w);
        svg.leaf(
            "rect",
            &[("x", &Num(x0)), ("y", &Num(bar_y)), ("width", &Num(x1 - x0)), ("height", &3), ("fill", &"#999")],
        );
        let node = view.groups.get(group).map_or(0, |g| g.node);
        let label = match x1 - x0 {
            w if w >= 90.0 => format!("group {group} · node {node}"),
            w if w >= 40.0 => format!("g{group} · n{node}"),
            _ => format!("g{group}"),
        };
        svg.text(x0, bar_y + 12.0, 9.0, &[("fill", &MUTED)], &label);
        g = e + 1;
    }
    svg.text(gx - 4.0, gy - 4.0, 9.0, &[("fill", &MUTED), ("text-anchor", &"end")], "cpu");
    for &(unit, ux) in &cols.drawn {
        let label = match view.units[unit].cpu {
            Some(cpu) => cpu.to_string(),
            None => "–".to_string(),
        };
        let (tx, ty) = (gx + ux + col_w / 2.0 + 3.0, gy - 4.0);
        let rot = format!("rotate(-90 {} {})", Num(tx), Num(ty));
        svg.text(tx, ty, 9.0, &[("fill", &INK), ("transform", &rot)], &label);
    }

    // The unit columns.
    let href = format!("#unit-col-{}", c.id);
    for &(unit, ux) in &cols.drawn {
        if view.units[unit].cpu.is_some() {
            let (x, y) = (Num(gx + ux), Num(gy));
            svg.leaf("use", &[("href", &href), ("xlink:href", &href), ("x", &x), ("y", &y)]);
        } else {
            svg.rect(gx + ux, gy, col_w, grid_h, "url(#nocpu)");
        }
    }

    // Page gridlines: every page when rows are tall enough, else at labels.
    let mut d = String::new();
    let every = if row_h >= 4.0 { 1 } else { step };
    for i in (every..c.pages.len()).step_by(every) {
        let y = gy + i as f64 * row_h;
        let _ = write!(d, "M{},{}H{}", Num(gx), Num(y), Num(gx + cols.width));
    }
    if !d.is_empty() {
        svg.leaf("path", &[("d", &d), ("stroke", &"#ffffff"), ("stroke-width", &0.6), ("fill", &"none")]);
    }
    svg.leaf(
        "rect",
        &[
            ("x", &Num(gx - 0.5)),
            ("y", &Num(gy - 0.5)),
            ("width", &Num(cols.width + 1.0)),
            ("height", &Num(grid_h + 1.0)),
            ("fill", &"none"),
            ("stroke", &"#555"),
            ("stroke-width", &0.5),
        ],
    );

    // Where the first chunk's own map starts.
    if c.map_page > c.first_page {
        let y = gy + (c.map_page - c.first_page) as f64 * row_h;
        let d = format!("M{},{}H{}", Num(gx - 2.0), Num(y), Num(gx + cols.width + 6.0));
        svg.leaf("path", &[("d", &d), ("stroke", &INK), ("stroke-width", &1), ("stroke-dasharray", &"3,2")]);
        svg.text(gx + cols.width + 8.0, y + 3.0, 9.0, &[("fill", &INK)], "base_addr");
    }

    // Page numbers (unit pages) and ticks.
    let mut ticks = String::new();
    for i in (0..c.pages.len()).filter(|i| (c.first_page + i) % step == 0) {
        let y = gy + i as f64 * row_h;
        let _ = write!(ticks, "M{},{}H{}", Num(gx - 4.0), Num(y), Num(gx - 1.0));
        svg.text(gx - 6.0, y + 7.0, 9.0, &[("fill", &MUTED), ("text-anchor", &"end")], &(c.first_page + i).to_string());
    }
    if !ticks.is_empty() {
        svg.leaf("path", &[("d", &ticks), ("stroke", &MUTED), ("stroke-width", &0.6)]);
    }
    let mut foot = gy + grid_h + LINE;
    let pages = format!("unit pages {}-{}", c.first_page, c.first_page + c.pages.len() - 1);
    svg.text(0.0, foot, 10.0, &[("fill", &MUTED)], &pages);
    if cols.hidden > 0 {
        foot += LINE;
        let without = if cols.hidden_without_cpu > 0 {
            format!(" ({} without a CPU)", cols.hidden_without_cpu)
        } else {
            String::new()
        };
        svg.text(0.0, foot, 10.0, &[("fill", &MUTED)], &format!("... {} more units{without}, same state", cols.hidden));
    }
    svg.close("g");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"a<b>&"c"'d'"#), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
        assert_eq!(escape("bell\u{7}"), "bell\u{fffd}");
    }

    #[test]
    fn numbers_are_short_and_exact() {
        assert_eq!(Num(3.0).to_string(), "3");
        assert_eq!(Num(2.5).to_string(), "2.5");
        assert_eq!(Num(1.0 / 3.0).to_string(), "0.33");
        assert_eq!(Num(-4.0).to_string(), "-4");
    }

    #[test]
    fn label_steps_keep_labels_apart() {
        assert_eq!(label_step(14.0), 1);
        assert_eq!(label_step(5.0), 4);
        assert_eq!(label_step(2.0), 8);
    }
}
