//! `conform`: runs the conformance suite against any set of peers (programs
//! speaking `conformance/PEERS.md`) and prints the N×N matrix.
//!
//! ```text
//! conform [--peer NAME=COMMAND | --peer go|rust|py]... [--case ID]... [--section N]... [--list]
//!         [--markdown FILE] [--json FILE] [--junit FILE] [--jobs N] [--strict]
//! ```
//!
//! Without `--peer`, the built-in peers run: `Go` (go-peer, built on first
//! use), `Rust` (this crate, in process) and `Py` (py-peer); `--peer go`,
//! `--peer rust` and `--peer py` pick some of them next to your own. Every pair case
//! runs for every writer×reader pair, every raw case against every reader,
//! every writer-bytes case from every writer. A case a peer does not support
//! (it exited 127) is shown as unsupported; with `--strict` that fails too.
//! The markdown report goes to stdout unless `--markdown` names a file.
//! Exit status: 0 all passed, 1 a run failed, 2 bad usage.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use udsipc_conformance::cases::{Body, CATALOG, Case, run_arm};
use udsipc_conformance::peer::Impl;
use udsipc_conformance::report::{CaseResult, junit, markdown};

const USAGE: &str = "usage: conform [--peer NAME=COMMAND | --peer go|rust|py]... [--case ID]... [--section N]... \
[--list] [--markdown FILE] [--json FILE] [--junit FILE] [--jobs N] [--strict]";

#[derive(Default)]
struct Options {
    peers: Vec<(String, String)>,
    cases: Vec<String>,
    sections: Vec<String>,
    list: bool,
    markdown: Option<String>,
    json: Option<String>,
    junit: Option<String>,
    jobs: usize,
    strict: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("conform: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn parse(args: &[String]) -> Options {
    let mut o = Options {
        jobs: 4,
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--peer" => {
                let v = value();
                if ["go", "rust", "py"].contains(&v.as_str()) {
                    o.peers.push((v, String::new()));
                    continue;
                }
                let (name, cmd) = v
                    .split_once('=')
                    .unwrap_or_else(|| usage("--peer takes NAME=COMMAND, or go, rust or py"));
                if name.is_empty() || name == "raw" || name.contains("->") {
                    usage(&format!("bad peer name {name:?}"));
                }
                o.peers.push((name.to_owned(), cmd.to_owned()));
            }
            "--case" => o.cases.push(value()),
            "--section" => o.sections.push(value()),
            "--list" => o.list = true,
            "--markdown" => o.markdown = Some(value()),
            "--json" => o.json = Some(value()),
            "--junit" => o.junit = Some(value()),
            "--jobs" => {
                o.jobs = value()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage("--jobs takes a number above 0"));
            }
            "--strict" => o.strict = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    o
}

/// Whether `case` is selected by the filters: an exact ID, or a section
/// that is its rule or a parent of it (`--section 2.2` selects 2.2.3).
fn selected(case: &Case, o: &Options) -> bool {
    let by_case = o.cases.iter().any(|c| c == case.id);
    let by_section = o
        .sections
        .iter()
        .any(|s| case.section() == s || case.section().starts_with(&format!("{s}.")));
    (o.cases.is_empty() && o.sections.is_empty()) || by_case || by_section
}

/// What a command peer's `hello` says: whether it is the Go reference,
/// and the capabilities it lists (`None`: it lists none).
type Hello = (bool, Option<Vec<String>>);

/// Asks a command peer `hello` for its profile and capabilities.
fn hello(name: &str, argv: &[String]) -> Result<Hello, String> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .arg("hello")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("peer {name}: running {}: {e}", argv[0]))?;
    if out.status.code() == Some(127) {
        // No hello: judged by the spec.
        return Ok((false, None));
    }
    for line in BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["event"] == "hello" {
                let capabilities = v["capabilities"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                });
                return Ok((v["profile"] == "go-reference", capabilities));
            }
        }
    }
    Err(format!("peer {name}: `hello` printed no hello line"))
}

fn peers(o: &Options) -> Vec<Impl> {
    if o.peers.is_empty() {
        return vec![Impl::Go, Impl::Rust, Impl::Py];
    }
    o.peers
        .iter()
        .map(|(name, cmd)| {
            match (name.as_str(), cmd.is_empty()) {
                ("go", true) => return Impl::Go,
                ("rust", true) => return Impl::Rust,
                ("py", true) => return Impl::Py,
                _ => {}
            }
            let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
            if argv.is_empty() {
                usage(&format!("peer {name} has an empty command"));
            }
            let (go_reference, capabilities) = hello(name, &argv).unwrap_or_else(|e| {
                eprintln!("conform: {e}");
                std::process::exit(2)
            });
            Impl::command(name, argv, go_reference, capabilities)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = parse(&args);
    let cases: Vec<&'static Case> = CATALOG.iter().filter(|c| selected(c, &o)).collect();
    if cases.is_empty() {
        usage("no case matches the filters (see --list)");
    }
    if o.list {
        use std::io::Write;
        let mut sorted = cases.clone();
        sorted.sort_by_key(|c| {
            c.section()
                .split('.')
                .map(|p| p.parse::<u32>().unwrap_or(u32::MAX))
                .collect::<Vec<_>>()
        });
        let mut out = std::io::stdout().lock();
        for c in &sorted {
            let kind = match c.body {
                Body::Pair(_) => "writer->reader",
                Body::Raw(_) => "raw->reader",
                Body::ToRaw(_) => "writer->raw",
            };
            if writeln!(
                out,
                "{}\t{}\t{kind}\t{}",
                c.id,
                c.level.as_str(),
                c.description
            )
            .is_err()
            {
                break;
            }
        }
        return;
    }
    let peers = peers(&o);
    let mut runs: Vec<(&'static Case, Option<Impl>, Option<Impl>)> = Vec::new();
    for &c in &cases {
        match c.body {
            Body::Pair(_) => {
                for &w in &peers {
                    for &r in &peers {
                        runs.push((c, Some(w), Some(r)));
                    }
                }
            }
            Body::Raw(_) => runs.extend(peers.iter().map(|&r| (c, None, Some(r)))),
            Body::ToRaw(_) => runs.extend(peers.iter().map(|&w| (c, Some(w), None))),
        }
    }
    let total = runs.len();
    eprintln!(
        "conform: {} cases, {} peers ({}), {total} runs",
        cases.len(),
        peers.len(),
        peers
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let queue = Mutex::new(runs.into_iter().enumerate());
    let results = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|s| {
        for _ in 0..o.jobs.min(total) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((i, (case, w, r))) = next else { break };
                    let result = run_arm(case, w, r);
                    eprintln!(
                        "[{}/{total}] {} {}: {}",
                        i + 1,
                        result.case,
                        result.arm,
                        if result.pass {
                            "pass"
                        } else if result.unsupported {
                            "unsupported"
                        } else {
                            "FAIL"
                        }
                    );
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<CaseResult> = results.into_iter().map(|(_, r)| r).collect();
    let md = markdown(&results);
    let write = |path: &str, text: &str| {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("conform: writing {path}: {e}");
            std::process::exit(2);
        }
    };
    match &o.markdown {
        Some(p) => write(p, &md),
        None => {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(md.as_bytes());
        }
    }
    if let Some(p) = &o.json {
        let json = serde_json::json!({
            "peers": peers.iter().map(|p| serde_json::json!({
                "name": p.name(), "profile": if p.is_go_reference() { "go-reference" } else { "spec" },
            })).collect::<Vec<_>>(),
            "results": results,
        });
        write(p, &serde_json::to_string_pretty(&json).unwrap_or_default());
    }
    if let Some(p) = &o.junit {
        write(p, &junit(&results));
    }
    let failed = results.iter().filter(|r| !r.pass && !r.unsupported).count();
    let unsupported = results.iter().filter(|r| r.unsupported).count();
    eprintln!(
        "conform: {} of {total} passed, {failed} failed, {unsupported} unsupported",
        total - failed - unsupported
    );
    if failed > 0 || (o.strict && unsupported > 0) {
        std::process::exit(1);
    }
}
