//! `percpu-bed matrix`: every arch x fixture set x configuration of a
//! matrix file, run across the machine's cores, reported as a table, JSON,
//! JUnit XML or KTAP.
//!
//! [`spec`] reads `ci/matrix.toml` and expands it into jobs (one
//! `percpu-bed run` each); [`run`] runs them on worker threads, each job
//! with its own emulator, and turns every test of every job into an
//! [`Outcome`]; the writers in [`table`], [`junit`] and [`ktap`] render a
//! [`MatrixReport`] (JSON is its serde form).
//!
//! A result is *expected* when a good test passes, a planted bug is
//! caught, or a planted bug the configuration declares latent behaves.
//! The matrix succeeds when every result of every job that ran is
//! expected; a job that cannot run at all (bad object, harness error)
//! is an error.

pub mod junit;
pub mod ktap;
pub mod spec;
pub mod table;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use percpu_arch::check::{self, Diagnostic, ScenarioReport, Status};
use serde::Serialize;

pub use spec::{Job, Plan, SpecError};

use crate::output::{interrupt, Progress};

/// What one test of one job came to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A good test behaved on every CPU.
    Pass,
    /// A planted bug was caught.
    Caught,
    /// A planted bug behaved where the configuration says it is latent.
    Latent,
    /// A good test misbehaved, or a planted bug went uncaught.
    Fail,
    /// The test could not run.
    Error,
}

impl Outcome {
    pub fn expected(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Caught | Outcome::Latent)
    }
}

/// One test's outcome in a job.
#[derive(Clone, Debug, Serialize)]
pub struct TestResult {
    pub object: String,
    pub test: String,
    pub outcome: Outcome,
    pub expect_caught: bool,
    /// Why a planted bug must be caught (the descriptor's `bug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bug: Option<String>,
    /// Why it is latent here (from the matrix file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent: Option<String>,
    /// The full diagnostic when the test misbehaved or did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
    pub micros: u64,
}

impl TestResult {
    /// `object:test`, the name reports use.
    pub fn name(&self) -> String {
        format!("{}:{}", self.object, self.test)
    }
}

/// Counts of outcomes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub pass: usize,
    pub caught: usize,
    pub latent: usize,
    pub fail: usize,
    pub error: usize,
    /// Jobs not run because their configuration skips the arch (or Ctrl-C
    /// came first); their tests are in no other count.
    pub skipped_jobs: usize,
}

impl Tally {
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Caught => self.caught += 1,
            Outcome::Latent => self.latent += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Error => self.error += 1,
        }
    }
    pub fn merge(&mut self, o: &Tally) {
        self.pass += o.pass;
        self.caught += o.caught;
        self.latent += o.latent;
        self.fail += o.fail;
        self.error += o.error;
        self.skipped_jobs += o.skipped_jobs;
    }
    pub fn total(&self) -> usize {
        self.pass + self.caught + self.latent + self.fail + self.error
    }
    pub fn unexpected(&self) -> usize {
        self.fail + self.error
    }
}

/// How a job went as a whole.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Every result as expected.
    Ok,
    /// Some result unexpected.
    Fail,
    /// The job could not run (see `error`).
    Error,
    /// The configuration does not apply to this arch (see `skipped`).
    Skipped,
}

/// One job's results.
#[derive(Clone, Debug, Serialize)]
pub struct JobResult {
    pub job: Job,
    pub status: JobStatus,
    pub tally: Tally,
    pub tests: Vec<TestResult>,
    /// Why the job could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The runner's full report (objects, loader warnings, every CPU run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ScenarioReport>,
    pub millis: u64,
}

/// Everything a matrix run produced.
#[derive(Clone, Debug, Serialize)]
pub struct MatrixReport {
    pub file: PathBuf,
    /// The kernel modelled ("Linux 6.1").
    pub kernel: String,
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    /// `I/N` when this is one shard of the matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub jobs: Vec<JobResult>,
    pub tally: Tally,
    pub threads: usize,
    pub millis: u64,
    /// Ctrl-C stopped the run: jobs that had not finished are reported as
    /// skipped ("interrupted").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The JSON summary (`--format json-summary`): the tally, a line per job
/// and the unexpected tests with their diagnostics as text, without the
/// runner's full reports (a few KB where `--format json` is megabytes).
#[derive(Clone, Debug, Serialize)]
pub struct Summary<'a> {
    pub file: &'a std::path::Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<&'a str>,
    pub ok: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    pub tally: Tally,
    pub threads: usize,
    pub millis: u64,
    pub jobs: Vec<JobSummary<'a>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobSummary<'a> {
    pub id: &'a str,
    pub status: JobStatus,
    pub tally: Tally,
    pub millis: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unexpected: Vec<UnexpectedTest>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnexpectedTest {
    pub name: String,
    pub outcome: Outcome,
    pub expect_caught: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<String>,
}

impl MatrixReport {
    /// The summary form of the report.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            file: &self.file,
            shard: self.shard.as_deref(),
            ok: self.ok() && !self.interrupted,
            interrupted: self.interrupted,
            tally: self.tally,
            threads: self.threads,
            millis: self.millis,
            jobs: self
                .jobs
                .iter()
                .map(|j| JobSummary {
                    id: &j.job.id,
                    status: j.status,
                    tally: j.tally,
                    millis: j.millis,
                    skipped: j.job.skipped.as_deref(),
                    error: j.error.as_deref(),
                    unexpected: j
                        .tests
                        .iter()
                        .filter(|t| !t.outcome.expected())
                        .map(|t| UnexpectedTest {
                            name: t.name(),
                            outcome: t.outcome,
                            expect_caught: t.expect_caught,
                            diagnostic: t.diagnostic.as_ref().map(|d| d.to_string()),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// True when every result of every job is as expected.
    pub fn ok(&self) -> bool {
        self.jobs.iter().all(|j| matches!(j.status, JobStatus::Ok | JobStatus::Skipped))
    }
}

/// Run every job of `plan` on `threads` worker threads.
pub fn run(plan: &Plan, threads: usize, shard: Option<String>) -> MatrixReport {
    let t0 = Instant::now();
    let threads = threads.clamp(1, plan.jobs.len().max(1));
    let progress = Progress::new(Some(plan.jobs.len() as u64));
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<JobResult>>> = Mutex::new(vec![None; plan.jobs.len()]);
    // Objects are read once and shared by every job that loads them.
    let cache = ObjectCache::default();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = plan.jobs.get(i) else { break };
                let result = if interrupt::requested() { interrupted(job) } else { run_job(job, &cache) };
                progress.step(&format!("{} {}", job.id, status_word(&result)));
                slots.lock().expect("no worker panics while holding the lock")[i] = Some(result);
            });
        }
    });
    progress.finish();
    let jobs: Vec<JobResult> = slots.into_inner().expect("workers done").into_iter().map(|r| r.expect("ran")).collect();
    let mut tally = Tally::default();
    for j in &jobs {
        tally.merge(&j.tally);
    }
    MatrixReport {
        file: plan.file.clone(),
        kernel: plan.kernel.to_string(),
        rows: plan.rows.clone(),
        columns: plan.columns.clone(),
        shard,
        jobs,
        tally,
        threads,
        millis: t0.elapsed().as_millis() as u64,
        interrupted: interrupt::requested(),
    }
}

pub const INTERRUPTED_REASON: &str = "not run: interrupted (Ctrl-C)";

/// A job Ctrl-C kept from running (or from finishing).
fn interrupted(job: &Job) -> JobResult {
    let mut job = job.clone();
    job.skipped = Some(INTERRUPTED_REASON.into());
    let tally = Tally { skipped_jobs: 1, ..Tally::default() };
    JobResult { job, status: JobStatus::Skipped, tally, tests: Vec::new(), error: None, report: None, millis: 0 }
}

/// Stops a running job on Ctrl-C.
struct StopOnInterrupt;

impl check::Observer for StopOnInterrupt {
    fn finished(&mut self, _: &check::TestReport) -> bool {
        !interrupt::requested()
    }
}

fn status_word(r: &JobResult) -> String {
    match r.status {
        JobStatus::Ok => format!("ok ({} tests)", r.tally.total()),
        JobStatus::Fail => format!("FAIL ({} unexpected)", r.tally.unexpected()),
        JobStatus::Error => "ERROR".into(),
        JobStatus::Skipped => "skipped".into(),
    }
}

#[derive(Default)]
struct ObjectCache(Mutex<HashMap<PathBuf, std::sync::Arc<crate::scenario::Object>>>);

impl ObjectCache {
    fn get(&self, path: &std::path::Path) -> anyhow::Result<std::sync::Arc<crate::scenario::Object>> {
        if let Some(o) = self.0.lock().expect("cache lock").get(path) {
            return Ok(o.clone());
        }
        let o = std::sync::Arc::new(crate::scenario::read_object(path)?);
        self.0.lock().expect("cache lock").insert(path.to_path_buf(), o.clone());
        Ok(o)
    }
}

/// Run one job and classify every test.
pub fn run_job(job: &Job, cache_: &impl JobObjects) -> JobResult {
    let t0 = Instant::now();
    let mut result = JobResult {
        job: job.clone(),
        status: JobStatus::Skipped,
        tally: Tally::default(),
        tests: Vec::new(),
        error: None,
        report: None,
        millis: 0,
    };
    if job.skipped.is_some() {
        result.tally.skipped_jobs = 1;
        return result;
    }
    let _span = tracing::info_span!("job", id = %job.id).entered();
    match execute(job, cache_) {
        Err(e) => {
            tracing::warn!("{}: {e:#}", job.id);
            result.status = JobStatus::Error;
            result.error = Some(format!("{e:#}"));
            result.tally.error += 1;
        }
        Ok(report) if report.interrupted => return interrupted(job),
        Ok(report) => {
            for t in &report.tests {
                let latent = match (t.expect_caught, t.status) {
                    // Declared in the matrix, or by a real module's
                    // expectation (`needs` a condition this job lacks).
                    (true, Status::Fail) if not_caught(t.diagnostic.as_ref()) => {
                        job.latent_reason(&t.object, &t.test).or(t.latent.as_deref())
                    }
                    _ => None,
                };
                let outcome = match (t.expect_caught, t.status, latent) {
                    (_, Status::Error, _) => Outcome::Error,
                    (false, Status::Pass, _) => Outcome::Pass,
                    (true, Status::Caught, _) => Outcome::Caught,
                    (true, Status::Fail, Some(_)) => Outcome::Latent,
                    _ => Outcome::Fail,
                };
                result.tally.add(outcome);
                result.tests.push(TestResult {
                    object: t.object.clone(),
                    test: t.test.clone(),
                    outcome,
                    expect_caught: t.expect_caught,
                    bug: t.bug.clone(),
                    latent: latent.map(str::to_string),
                    diagnostic: t.diagnostic.clone(),
                    micros: t.micros,
                });
            }
            result.status = if result.tally.unexpected() == 0 { JobStatus::Ok } else { JobStatus::Fail };
            result.report = Some(report);
        }
    }
    result.millis = t0.elapsed().as_millis() as u64;
    result
}

/// A planted bug reported as failing only because it behaved everywhere
/// (not because the harness broke), i.e. the one case latency explains.
fn not_caught(d: Option<&Diagnostic>) -> bool {
    d.is_some_and(|d| d.findings.iter().all(|f| f.kind == check::FindingKind::NotCaught))
}

/// Where jobs get their objects' bytes.
pub trait JobObjects: Sync {
    fn object(&self, path: &std::path::Path) -> anyhow::Result<std::sync::Arc<crate::scenario::Object>>;
}

impl JobObjects for ObjectCache {
    fn object(&self, path: &std::path::Path) -> anyhow::Result<std::sync::Arc<crate::scenario::Object>> {
        self.get(path)
    }
}

fn execute(job: &Job, objects: &impl JobObjects) -> anyhow::Result<ScenarioReport> {
    let scenario = job.scenario()?;
    let loaded = job.objects.iter().map(|p| objects.object(p)).collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(dir) = &job.kbuild {
        let rt = crate::kmod::runtime_abi(Some(dir), &job.objects)?;
        let mut scenario = scenario;
        scenario.kernel = crate::kmod::profile_for(&rt.abi, &scenario.kernel);
        let pairs: Vec<(std::path::PathBuf, &crate::scenario::Object)> =
            job.objects.iter().cloned().zip(loaded.iter().map(|o| o.as_ref())).collect();
        let expects = crate::kmod::expectations(&pairs, &rt.abi)?;
        let modules: Vec<(&str, &[u8])> = loaded.iter().map(|m| (m.name.as_str(), m.bytes.as_slice())).collect();
        return Ok(check::run_kernel_modules(&scenario, &rt.abi, &modules, &expects)?);
    }
    let (kernel, modules) = loaded.split_first().expect("a job has a kernel image");
    let modules: Vec<(&str, &[u8])> = modules.iter().map(|m| (m.name.as_str(), m.bytes.as_slice())).collect();
    Ok(check::run_observed(&scenario, (&kernel.name, &kernel.bytes), &modules, &mut StopOnInterrupt)?)
}

/// Tests that run a real job quickly (x86_64 at 2 CPUs), shared by the
/// format writers' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A small report from real runs: an ok job, a job whose planted bugs
    /// are declared latent (and so one that is not), a skipped job and a
    /// job that cannot run.
    pub fn report() -> MatrixReport {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/obj");
        let text = r#"
            [[arch]]
            name = "x86_64"
            variants = ["zero-based"]
            [[arch]]
            name = "s390x"
            [[fixtures]]
            name = "bugs"
            objects = ["bug_trunc32.o", "bug_noweak_module.o", "static.o"]
            [[config]]
            name = "cpus-2"
            cpus = 2
            [[config]]
            name = "near"
            cpus = 2
            modules = "near"
            latent = { "bug_noweak_module.o" = "module percpu is in larl reach" }
            only = ["s390x"]
            [[config]]
            name = "skipped"
            cpus = 1
            skip = { "x86_64" = "not applicable" }
        "#;
        let plan = Plan::parse(text, std::path::Path::new("unit-matrix.toml"), &shipped).unwrap();
        let mut r = run(&plan, 2, None);
        // A job that cannot run: its kernel image is missing.
        let mut broken = plan.jobs[0].clone();
        broken.id = "x86_64/zero-based:missing".into();
        broken.config = "missing".into();
        broken.objects[0] = PathBuf::from("/nonexistent/kernel.o");
        let b = run_job(&broken, &ObjectCache::default());
        r.tally.merge(&b.tally);
        r.jobs.push(b);
        r.columns.push("missing".into());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_real_runs() {
        let r = testutil::report();
        let by_id = |id: &str| r.jobs.iter().find(|j| j.job.id == id).unwrap_or_else(|| panic!("no job {id}"));
        let ok = by_id("x86_64/zero-based:cpus-2");
        assert_eq!(ok.status, JobStatus::Ok, "{:?}", ok.tests);
        assert!(ok.tally.pass > 0 && ok.tally.caught > 0);
        let near = by_id("s390x/default:near");
        assert_eq!(near.status, JobStatus::Ok, "{:#?}", near.tests);
        assert!(near.tests.iter().any(|t| t.outcome == Outcome::Latent && t.object == "bug_noweak_module.o"));
        assert!(near.tests.iter().all(|t| t.outcome != Outcome::Latent || t.latent.is_some()));
        assert_eq!(by_id("x86_64/zero-based:skipped").status, JobStatus::Skipped);
        assert_eq!(by_id("s390x/default:skipped").status, JobStatus::Ok);
        let broken = by_id("x86_64/zero-based:missing");
        assert_eq!(broken.status, JobStatus::Error);
        assert!(broken.error.as_deref().unwrap().contains("/nonexistent/kernel.o"));
        assert!(!r.ok());
        assert_eq!(r.tally.skipped_jobs, 1);

        let summary = serde_json::to_value(r.summary()).unwrap();
        assert_eq!(summary["ok"], false);
        assert_eq!(summary["tally"]["skipped_jobs"], 1);
        assert_eq!(summary["tally"]["pass"], r.tally.pass);
        let jobs = summary["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), r.jobs.len());
        let missing = jobs.iter().find(|j| j["id"] == "x86_64/zero-based:missing").unwrap();
        assert_eq!(missing["status"], "error");
        assert!(missing["error"].as_str().unwrap().contains("/nonexistent/kernel.o"));
        let skipped = jobs.iter().find(|j| j["id"] == "x86_64/zero-based:skipped").unwrap();
        assert_eq!(skipped["skipped"], "not applicable");
        // Far smaller than the full report.
        let full = serde_json::to_string(&r).unwrap().len();
        let small = serde_json::to_string(&r.summary()).unwrap().len();
        assert!(small * 10 < full, "summary {small} bytes, full {full}");
    }
}
