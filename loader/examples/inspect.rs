//! Print the inspect report of each file (`--format json` for JSON), the way
//! `percpu-bed inspect FILE... [--format json]` will.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut json = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--format" => json = args.next().as_deref() == Some("json"),
            "--json" => json = true,
            _ => files.push(a),
        }
    }
    let mut reports = Vec::new();
    let mut failed = false;
    for f in &files {
        match percpu_loader::inspect_path(f) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports).expect("serialise"));
    } else {
        for r in &reports {
            print!("{r}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
