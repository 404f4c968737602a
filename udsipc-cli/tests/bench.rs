//! `udsipc bench`: the side-by-side table runner, smoke-run end to end
//! (every size, the JSON and SVG outputs, the Go columns when Go is missing
//! or fails). Speeds are never asserted.

fn smoke(extra: &[&str], envs: &[(&str, &str)]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("table.json");
    let svg = dir.path().join("chart.svg");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_udsipc"));
    cmd.arg("bench")
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg);
    cmd.args(extra);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (String::from_utf8(out.stdout).unwrap(), value)
}

#[test]
fn smoke_run_without_go_prints_every_size_and_says_why_go_is_missing() {
    let (table, json) = smoke(&["--no-go"], &[]);
    for label in [
        "| 64 B |",
        "| 1 KiB |",
        "| 10 KiB |",
        "| 100 KiB |",
        "| 1 MiB |",
    ] {
        assert!(table.contains(label), "{table}");
    }
    assert!(table.contains("Go columns: n/a"), "{table}");
    assert!(table.contains("Rust → Rust"), "{table}");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        for key in [
            "rust_mbps",
            "tokio_util_mbps",
            "codec_mbps",
            "raw_limit_mbps",
            "raw_blocking_mbps",
            "raw_epoll_mbps",
            "framed_limit_mbps",
            "framed_blocking_mbps",
            "framed_epoll_mbps",
            "rust_allocs_per_msg",
            "codec_allocs_per_msg",
        ] {
            assert!(row[key].as_f64().unwrap() >= 0.0, "{key} in {row}");
        }
        for key in ["raw_limit_how", "framed_limit_how"] {
            let how = row[key].as_str().unwrap();
            assert!(how == "blocking" || how == "epoll", "{key} in {row}");
        }
        assert!(row["go_mbps"].is_null(), "{row}");
    }
    // The counting allocator is on while a bench runs (it is off for the
    // binary's other commands): the codec baseline allocates.
    let counted: f64 = rows
        .iter()
        .map(|r| r["codec_allocs_per_msg"].as_f64().unwrap())
        .sum();
    assert!(counted > 0.0, "no allocation counted: {rows:#?}");
    // The latency floor, on the latency size's row and in its own table.
    assert!(rows[0]["latency_floor_p50_us"].as_f64().unwrap() > 0.0);
    assert!(json["latency_floor"]["ping_pong_p99_us"].as_f64().unwrap() > 0.0);
    assert!(table.contains("% of framed limit"), "{table}");
    assert!(table.contains("| udsipc codec MB/s |"), "{table}");
    assert!(table.contains("floor: paced one-way"), "{table}");
}

#[test]
fn smoke_run_reports_ratios_with_spread_cpu_per_process_and_both_tables() {
    let (table, json) = smoke(&["--no-go", "--size", "64", "--size", "1024"], &[]);
    for row in json["rows"].as_array().unwrap() {
        for key in [
            "ratio_framed_limit",
            "ratio_tokio_util",
            "ratio_cpu_framed_limit",
        ] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key} in {row}");
            let spread = &row["ratio_spread"][key];
            assert!(spread["min"].as_f64().unwrap() <= spread["max"].as_f64().unwrap());
        }
        // Present (null without Go or ZeroMQ).
        for key in ["zmq_mbps", "zmq_msgs_per_sec", "ratio_zmq", "ratio_go"] {
            assert!(row.get(key).is_some(), "{key} in {row}");
        }
        assert!(row["ratio_go"].is_null(), "{row}");
        assert!(row["limit_unreliable"].is_array(), "{row}");
        // Every two-process column: the writer's and the reader's CPU.
        for column in [
            "udsipc",
            "tokio_util",
            "codec",
            "framed_limit_blocking",
            "framed_limit_epoll",
            "raw_blocking",
            "raw_epoll",
        ] {
            let cpu = &row["cpu_ns_per_msg"][column];
            assert!(cpu["writer"].as_f64().unwrap() > 0.0, "{column} in {row}");
            assert!(cpu["reader"].as_f64().unwrap() > 0.0, "{column} in {row}");
        }
    }
    let inproc = json["inproc_rows"].as_array().unwrap();
    assert_eq!(inproc.len(), 2);
    for column in [
        "udsipc",
        "tokio_util",
        "codec",
        "framed_limit_blocking",
        "raw_epoll",
    ] {
        assert!(
            inproc[0]["mbps"][column].as_f64().unwrap() > 0.0,
            "{column}"
        );
        assert!(
            inproc[0]["cpu_ns_per_msg"][column].as_f64().unwrap() > 0.0,
            "{column}"
        );
    }
    // Each column names its topology and producer API; udsipc's is the
    // same in both tables.
    let columns = json["columns"].as_array().unwrap();
    let producer = |key: &str, topology: &str| {
        columns
            .iter()
            .find(|c| c["key"] == key && c["topology"] == topology)
            .map(|c| c["producer"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {key} column in {topology}"))
    };
    assert_eq!(
        producer("udsipc", "two_processes"),
        producer("udsipc", "in_process")
    );
    assert!(producer("udsipc", "two_processes").contains("BufferedWriter"));
    for heading in [
        "Two processes in every column",
        "CPU ns per message",
        "Each ratio's spread across rounds",
        "In one process",
        "| column | topology | producer → reader |",
    ] {
        assert!(table.contains(heading), "{heading}: {table}");
    }
}

#[test]
fn unobtainable_libzmq_leaves_the_zeromq_column_empty_without_failing() {
    let (table, json) = smoke(&["--no-go", "--size", "64"], &[("CC", "/nonexistent/cc")]);
    assert!(
        table.contains("ZeroMQ column: n/a (no C compiler"),
        "{table}"
    );
    assert!(
        json["zmq_unavailable"]
            .as_str()
            .unwrap()
            .contains("C compiler")
    );
    assert!(json["rows"][0]["zmq_mbps"].is_null());
    assert!(json["rows"][0]["rust_mbps"].as_f64().unwrap() > 0.0);
    let pairs: Vec<&str> = json["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["pair"].as_str().unwrap())
        .collect();
    assert_eq!(pairs, ["Rust → Rust"]);
}

#[test]
fn zeromq_column_is_measured_when_libzmq_is_installed() {
    // Only where zmq-peer compiles (ci/bench installs libzmq3-dev; ci/test
    // does not need it).
    let (table, json) = smoke(&["--no-go", "--size", "64"], &[]);
    if let Some(why) = json["zmq_unavailable"].as_str() {
        assert!(table.contains("ZeroMQ column: n/a"), "{table}");
        eprintln!("ZeroMQ n/a here ({why}): nothing more to check");
        return;
    }
    let row = &json["rows"][0];
    assert!(row["zmq_mbps"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["ratio_zmq"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["cpu_ns_per_msg"]["zmq"]["reader"].as_f64().unwrap() > 0.0);
    assert!(json["zmq_unavailable"].is_null());
    assert!(table.contains("| ZeroMQ → ZeroMQ |"), "{table}");
}

#[test]
fn unobtainable_go_reference_leaves_the_go_columns_empty_without_failing() {
    let (table, json) = smoke(
        &["--size", "1024"],
        &[("UDSIPC_GO_REFERENCE", "/nonexistent/uds-ipc")],
    );
    assert!(table.contains("Go columns: n/a"), "{table}");
    assert!(
        json["go_unavailable"]
            .as_str()
            .unwrap()
            .contains("UDSIPC_GO_REFERENCE")
    );
    assert!(json["rows"][0]["go_mbps"].is_null());
}

#[test]
fn go_peer_failing_mid_run_drops_the_go_columns_without_failing() {
    use std::os::unix::fs::PermissionsExt;
    // A stand-in `go` whose "build" produces a peer that fails at once.
    let dir = tempfile::tempdir().unwrap();
    let fake_go = dir.path().join("go");
    std::fs::write(
        &fake_go,
        "#!/bin/sh\ncase \"$1\" in\n  version) echo fake; exit 0;;\n  build) printf '#!/bin/sh\\necho broken peer >&2\\nexit 3\\n' > \"$3\"; chmod +x \"$3\"; exit 0;;\nesac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake_go, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (table, json) = smoke(
        &["--size", "64"],
        &[
            ("GO", fake_go.to_str().unwrap()),
            ("UDSIPC_GO_REFERENCE", ""),
        ],
    );
    assert!(
        table.contains("Go columns: n/a (the Go peer failed"),
        "{table}"
    );
    assert!(json["rows"][0]["go_mbps"].is_null());
    assert!(json["rows"][0]["rust_mbps"].as_f64().unwrap() > 0.0);
}

#[test]
fn scaling_measures_every_writer_count_into_one_reader() {
    let (table, json) = smoke(&["--no-go", "--size", "64", "--scaling"], &[]);
    let rows = json["scaling"].as_array().unwrap();
    let writers: Vec<u64> = rows
        .iter()
        .map(|r| r["writers"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, [1, 4, 16, 64]);
    for r in rows {
        assert!(r["mbps"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(table.contains("writers into one Reader"), "{table}");
}

#[test]
fn compare_says_whether_runs_agree_on_each_headline_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![];
    for (i, ratio) in [2.0, 2.1, 1.95].iter().enumerate() {
        let path = dir.path().join(format!("run{i}.json"));
        let json = serde_json::json!({"rows": [{"size": 64, "ratio_tokio_util": ratio}]});
        std::fs::write(&path, json.to_string()).unwrap();
        files.push(path);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udsipc"))
        .args(["bench", "--compare"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table
            .contains("| 64 B | udsipc / tokio-util | 2.00× | 2.10× | 1.95× | 2.00× | ±5% | yes |"),
        "{table}"
    );
    assert!(
        table.contains("1 of 1 headline ratios agree within ±10% across 3 runs"),
        "{table}"
    );
}

/// One smoke cell (1 KiB, given with a unit) run as `command` does it.
fn one_cell_args() -> [&'static str; 7] {
    [
        "bench",
        "--smoke",
        "--no-go",
        "--no-zmq",
        "--size",
        "1KiB",
        "--rounds=1",
    ]
}

#[test]
fn progress_is_drawn_per_cell_on_a_terminal_and_quiet_when_piped() {
    let bin = env!("CARGO_BIN_EXE_udsipc");
    // Piped stderr: no progress at all, and the size unit was taken.
    let out = std::process::Command::new(bin)
        .args(one_cell_args())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("round 1:"), "{err}");
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 KiB"));
    // A terminal (script(1) runs it on a pseudo-terminal): the bar names
    // each cell as it is measured.
    let Ok(probe) = std::process::Command::new("script")
        .arg("--version")
        .output()
    else {
        eprintln!("skipped the terminal half: no script(1) (util-linux)");
        return;
    };
    assert!(probe.status.success());
    let command = format!("{bin} {}", one_cell_args().join(" "));
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("round 1: 1 KiB"), "{screen}");
    assert!(screen.contains("round 1: latency"), "{screen}");
}
