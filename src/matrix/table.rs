//! The human summary: a table with a row per arch variant and a column per
//! configuration, then every unexpected result with its full diagnostic.

use std::fmt::Write;

use super::{JobResult, JobStatus, MatrixReport, Outcome};
use crate::output::plural;

/// One cell: `65p 5c` (pass, caught, `l` latent), `FAIL 2`, `ERROR`,
/// `skip`, or `.` for a job not in this run (filtered or another shard).
fn cell(j: Option<&JobResult>) -> String {
    let Some(j) = j else { return ".".into() };
    let t = &j.tally;
    match j.status {
        JobStatus::Skipped => "skip".into(),
        JobStatus::Error => "ERROR".into(),
        JobStatus::Fail => format!("FAIL {}", t.unexpected()),
        JobStatus::Ok => {
            let mut s = format!("{}p {}c", t.pass, t.caught);
            if t.latent > 0 {
                let _ = write!(s, " {}l", t.latent);
            }
            s
        }
    }
}

/// The table at any width (see [`render_width`]).
pub fn render(r: &MatrixReport) -> String {
    render_width(r, None)
}

/// The table; with a `width`, its columns are split into blocks that fit
/// (each repeating the arch column) instead of letting the terminal wrap
/// every row.
pub fn render_width(r: &MatrixReport, width: Option<usize>) -> String {
    let mut out = String::new();
    let find = |row: &str, col: &str| r.jobs.iter().find(|j| j.job.row == row && j.job.config == col);
    let rows: Vec<&String> = r.rows.iter().filter(|row| r.jobs.iter().any(|j| &j.job.row == *row)).collect();
    let cols: Vec<&String> = r.columns.iter().filter(|c| r.jobs.iter().any(|j| &j.job.config == *c)).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(|row| cols.iter().map(|c| cell(find(row, c))).collect()).collect();
    let w0 = rows.iter().map(|r| r.len()).max().unwrap_or(0).max("arch".len());
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|row| row[i].len()).max().unwrap_or(0).max(c.len()))
        .collect();
    // Blocks of columns: as many as fit beside the arch column (at least one).
    let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    let mut used = w0;
    for (i, w) in widths.iter().enumerate() {
        if width.is_some_and(|max| i > start && used + 2 + w > max) {
            blocks.push(start..i);
            start = i;
            used = w0;
        }
        used += 2 + w;
    }
    blocks.push(start..cols.len());
    // The corner cell names the kernel modelled.
    let corner = format!("arch ({})", r.kernel);
    let w0 = w0.max(corner.len());
    for (b, block) in blocks.iter().enumerate() {
        if b > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{corner:<w0$}");
        for i in block.clone() {
            let _ = write!(out, "  {:>w$}", cols[i], w = widths[i]);
        }
        out.push('\n');
        for (row, cells) in rows.iter().zip(&cells) {
            let _ = write!(out, "{row:<w0$}");
            for i in block.clone() {
                let _ = write!(out, "  {:>w$}", cells[i], w = widths[i]);
            }
            out.push('\n');
        }
    }
    out.push_str("p pass, c planted bug caught, l planted bug latent in this configuration (declared in the matrix)\n");

    let skipped: Vec<&JobResult> = r.jobs.iter().filter(|j| j.status == JobStatus::Skipped).collect();
    if !skipped.is_empty() {
        out.push_str("\nskipped:\n");
        for j in skipped {
            let _ = writeln!(out, "  {}: {}", j.job.id, j.job.skipped.as_deref().unwrap_or(""));
        }
    }
    let unexpected: Vec<&JobResult> =
        r.jobs.iter().filter(|j| matches!(j.status, JobStatus::Fail | JobStatus::Error)).collect();
    for j in &unexpected {
        let _ = writeln!(
            out,
            "\n{} {} (cpus {}, {}, modules {}, tests on {} cpus):",
            if j.status == JobStatus::Error { "ERROR" } else { "FAIL" },
            j.job.id,
            j.job.cpus,
            plural(j.job.nodes as usize, "node", "nodes"),
            j.job.placement,
            j.job.run_on
        );
        if let Some(e) = &j.error {
            let _ = writeln!(out, "  cannot run: {e}");
        }
        for t in j.tests.iter().filter(|t| !t.outcome.expected()) {
            let what = if t.outcome == Outcome::Error { "ERROR" } else { "FAIL" };
            let _ = writeln!(out, "  {what} {}{}", t.name(), if t.expect_caught { " (planted bug)" } else { "" });
            if let Some(d) = &t.diagnostic {
                for line in d.to_string().lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
    }
    let t = &r.tally;
    let ran = r.jobs.iter().filter(|j| j.status != JobStatus::Skipped).count();
    let _ = writeln!(
        out,
        "\n{} ({} skipped){} on {} in {:.1} s: {} pass, {} caught, {} latent, {} fail, {} error: {}",
        plural(ran, "job", "jobs"),
        r.jobs.len() - ran,
        r.shard.as_ref().map(|s| format!(", shard {s}")).unwrap_or_default(),
        plural(r.threads, "thread", "threads"),
        r.millis as f64 / 1000.0,
        t.pass,
        t.caught,
        t.latent,
        t.fail,
        t.error,
        if r.interrupted {
            "INTERRUPTED, partial".to_string()
        } else if r.ok() {
            "all as expected".to_string()
        } else {
            format!("{} UNEXPECTED", plural(unexpected.len(), "job", "jobs"))
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_every_row_column_and_the_failures() {
        let r = super::super::testutil::report();
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("arch (Linux 6.1)") && lines[0].contains("cpus-2") && lines[0].contains("missing")
        );
        let x86 = lines.iter().find(|l| l.starts_with("x86_64/zero-based")).unwrap();
        assert!(x86.contains("skip") && x86.contains("ERROR"), "{x86}");
        let s390 = lines.iter().find(|l| l.starts_with("s390x/default")).unwrap();
        assert!(s390.contains("l"), "{s390}");
        assert!(text.contains("ERROR x86_64/zero-based:missing"), "{text}");
        assert!(text.contains("cannot run: ") && text.contains("/nonexistent/kernel.o"));
        assert!(text.contains("x86_64/zero-based:skipped: not applicable"));
        assert!(text.trim_end().ends_with("1 job UNEXPECTED"), "{text}");
    }

    #[test]
    fn narrow_tables_split_their_columns_into_blocks() {
        let r = super::super::testutil::report();
        let wide = render_width(&r, None);
        let narrow = render_width(&r, Some(30));
        let headers: Vec<&str> = narrow.lines().filter(|l| l.starts_with("arch")).collect();
        assert!(headers.len() > 1, "{narrow}");
        assert_eq!(wide.lines().filter(|l| l.starts_with("arch")).count(), 1);
        // Every column is in exactly one block, and the rows fit.
        for c in &r.columns {
            assert_eq!(headers.iter().filter(|h| h.split_whitespace().any(|w| w == c)).count(), 1, "{c}: {narrow}");
        }
        for l in narrow.lines().take_while(|l| !l.starts_with("p pass")) {
            assert!(l.len() <= 30 || !l.contains("  "), "{l:?}");
        }
    }
}
