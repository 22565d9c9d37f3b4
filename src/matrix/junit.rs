//! JUnit XML, what CI servers display: a `<testsuite>` per job, a
//! `<testcase>` per fixture test.  A caught planted bug is a passing case
//! whose `<system-out>` holds the diagnostic; a latent one is `<skipped>`;
//! a failing one carries `<failure>` with the one-line summary as message
//! and the full diagnostic as text.  A job that could not run is one
//! `<error>` case, a skipped job one `<skipped>` case.

use std::fmt::Write;

use super::{JobResult, JobStatus, MatrixReport, Outcome, TestResult};

/// Text as XML character data or attribute value: markup escaped, and
/// the control characters XML 1.0 forbids (even escaped) replaced.
fn x(s: &str) -> String {
    let clean: String =
        s.chars().map(|c| if c < ' ' && !matches!(c, '\t' | '\n' | '\r') { '\u{fffd}' } else { c }).collect();
    quick_xml::escape::escape(clean.as_str()).into_owned()
}

fn secs(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1e6)
}

pub fn render(r: &MatrixReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let count = |f: &dyn Fn(&JobResult) -> usize| r.jobs.iter().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "<testsuites name=\"percpu-bed matrix\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
        count(&|j| cases(j)),
        count(&|j| j.tally.fail),
        count(&|j| j.tally.error),
        count(&|j| skipped(j)),
        secs(r.millis * 1000)
    );
    for j in &r.jobs {
        suite(&mut out, j);
    }
    out.push_str("</testsuites>\n");
    out
}

fn cases(j: &JobResult) -> usize {
    if j.tests.is_empty() {
        1
    } else {
        j.tests.len()
    }
}

fn skipped(j: &JobResult) -> usize {
    match j.status {
        JobStatus::Skipped => 1,
        _ => j.tally.latent,
    }
}

fn suite(out: &mut String, j: &JobResult) {
    let job = &j.job;
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
        x(&job.id),
        cases(j),
        j.tally.fail,
        j.tally.error,
        skipped(j),
        secs(j.millis * 1000)
    );
    out.push_str("    <properties>\n");
    let props = [
        ("arch", job.arch.clone()),
        ("variant", job.variant.clone()),
        ("fixture_set", job.fixture_set.clone()),
        ("config", job.config.clone()),
        ("cpus", job.cpus.clone()),
        ("nodes", job.nodes.to_string()),
        ("modules", job.placement.to_string()),
        ("run_on", job.run_on.to_string()),
        ("budget", job.budget.to_string()),
    ];
    for (k, v) in props {
        let _ = writeln!(out, "      <property name=\"{k}\" value=\"{}\"/>", x(&v));
    }
    out.push_str("    </properties>\n");
    let open = |out: &mut String, name: &str, micros: u64| {
        let _ =
            write!(out, "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"", x(&job.id), x(name), secs(micros));
    };
    match j.status {
        JobStatus::Skipped => {
            open(out, "(job)", 0);
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                x(job.skipped.as_deref().unwrap_or("skipped"))
            );
        }
        JobStatus::Error if j.tests.is_empty() => {
            open(out, "(job)", j.millis * 1000);
            let e = j.error.as_deref().unwrap_or("the job could not run");
            let _ = writeln!(
                out,
                ">\n      <error message=\"{}\" type=\"setup\">{}</error>\n    </testcase>",
                x(e.lines().next().unwrap_or(e)),
                x(e)
            );
        }
        _ => {
            for t in &j.tests {
                open(out, &t.name(), t.micros);
                case_body(out, t);
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

fn case_body(out: &mut String, t: &TestResult) {
    let summary = t.diagnostic.as_ref().map(|d| d.summary.clone()).unwrap_or_default();
    let full = t.diagnostic.as_ref().map(|d| d.to_string()).unwrap_or_default();
    match t.outcome {
        Outcome::Pass => out.push_str("/>\n"),
        Outcome::Caught => {
            let _ = writeln!(
                out,
                ">\n      <system-out>planted bug caught ({}):\n{}</system-out>\n    </testcase>",
                x(t.bug.as_deref().unwrap_or("")),
                x(&full)
            );
        }
        Outcome::Latent => {
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"planted bug latent in this configuration: {}\"/>\n    </testcase>",
                x(t.latent.as_deref().unwrap_or(""))
            );
        }
        Outcome::Fail | Outcome::Error => {
            let (tag, kind) = if t.outcome == Outcome::Error {
                ("error", "harness".to_string())
            } else {
                let kind = t.diagnostic.as_ref().and_then(|d| d.findings.first()).map(|f| format!("{:?}", f.kind));
                ("failure", kind.unwrap_or_else(|| "Fail".into()))
            };
            let _ = writeln!(
                out,
                ">\n      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n    </testcase>",
                x(&summary),
                x(&kind),
                x(&full)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse with a real XML parser and check the structure and counts
    /// CI servers read.
    #[test]
    fn junit_is_well_formed_and_counts_add_up() {
        let r = super::super::testutil::report();
        let xml = render(&r);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
        assert_eq!(suites.len(), r.jobs.len());
        let attr = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<usize>().unwrap();
        let mut total = (0, 0, 0, 0);
        for s in &suites {
            let cases: Vec<_> = s.children().filter(|n| n.has_tag_name("testcase")).collect();
            let with = |tag: &str| cases.iter().filter(|c| c.children().any(|k| k.has_tag_name(tag))).count();
            assert_eq!(attr(s, "tests"), cases.len(), "{:?}", s.attribute("name"));
            assert_eq!(attr(s, "failures"), with("failure"));
            assert_eq!(attr(s, "errors"), with("error"));
            assert_eq!(attr(s, "skipped"), with("skipped"));
            assert!(s.children().any(|n| n.has_tag_name("properties")));
            for c in &cases {
                assert!(c.attribute("classname").is_some() && c.attribute("name").is_some());
                c.attribute("time").unwrap().parse::<f64>().unwrap();
            }
            total.0 += cases.len();
            total.1 += with("failure");
            total.2 += with("error");
            total.3 += with("skipped");
        }
        assert_eq!(
            (attr(&root, "tests"), attr(&root, "failures"), attr(&root, "errors"), attr(&root, "skipped")),
            total
        );
        assert!(total.2 >= 1 && total.3 >= 2, "{total:?}");
        // The caught planted bugs carry their diagnostic.
        let caught = doc
            .descendants()
            .find(|n| n.has_tag_name("system-out") && n.text().unwrap_or("").contains("planted bug caught"))
            .expect("a caught planted bug");
        assert!(caught.text().unwrap().contains("x86_64/zero-based"));
    }

    #[test]
    fn text_is_escaped_and_control_characters_dropped() {
        assert_eq!(x("a<b & \"c\" \u{1b}[0m"), "a&lt;b &amp; &quot;c&quot; \u{fffd}[0m");
        roxmltree::Document::parse(&format!("<a b=\"{}\">{}</a>", x("\"<&>'\u{0}"), x("]]>\u{7}"))).unwrap();
    }
}
