//! The toxiproxy-compatible control API, driven by toxiproxy's own Go
//! client library (built from `udsipc-cli/toxiproxy-client` with the Go
//! module proxy) and, for the Unix-socket listener and the error shapes, by
//! curl.

mod support;

use std::path::Path;

use support::{Proxy, go, output};

/// Builds the Go program once per source state into the target directory.
fn toxiproxy_client() -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("toxiproxy-client");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("toxiproxy-client");
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let built = output(go(), &["build", "-o", tmp.to_str().unwrap(), "."], &src);
    assert!(
        built.status.success(),
        "go build of toxiproxy-client failed (it needs the Go module proxy): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

#[test]
fn toxiproxys_go_client_drives_the_proxy_through_the_api() {
    let client = toxiproxy_client();
    let dir = tempfile::tempdir().unwrap();
    let (proxy, line) = Proxy::start(&["--api", "127.0.0.1:0"], "api listening on ");
    let addr = line.trim_start_matches("api listening on ").to_owned();
    let run = output(&client, &[&addr, dir.path().to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        11,
        "{stdout}"
    );
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    // The faults the client added fired, and were logged as JSON lines.
    let cuts = lines
        .iter()
        .filter(|l| {
            l.starts_with(r#"{"fault":"drop-after-frames""#) && l.ends_with(r#""proxy":"svc"}"#)
        })
        .count();
    assert_eq!(cuts, 2, "{lines:#?}");
    let stats: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(stats["connections"].as_u64().unwrap() >= 6, "{stats}");
}

fn curl(socket: &Path, args: &[&str]) -> (u16, String) {
    let mut all = vec![
        "--silent",
        "--show-error",
        "--unix-socket",
        socket.to_str().unwrap(),
        "--write-out",
        "\n%{http_code}",
    ];
    all.extend_from_slice(args);
    let out = output("curl", &all, Path::new("."));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.trim_end().to_owned())
}

#[test]
fn the_api_on_a_unix_socket_answers_with_toxiproxys_status_codes_and_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api.sock");
    let (proxy, _) = Proxy::start(&["--api", api.to_str().unwrap()], "api listening on ");
    let (code, body) = curl(&api, &["http://toxiproxy/version"]);
    assert_eq!(code, 200);
    assert!(body.contains(r#""version":"udsipc-testkit"#), "{body}");
    let (code, body) = curl(
        &api,
        &[
            "-X",
            "POST",
            "--data",
            r#"{"name":"a","listen":"/tmp/x.sock"}"#,
            "http://toxiproxy/proxies",
        ],
    );
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            r#"{"error":"missing required field: upstream","status":400}"#
        )
    );
    let (code, body) = curl(
        &api,
        &["-X", "POST", "--data", "{nope", "http://toxiproxy/proxies"],
    );
    assert_eq!(code, 400);
    assert!(body.contains("bad request body"), "{body}");
    let (code, body) = curl(&api, &["http://toxiproxy/proxies/nope"]);
    assert_eq!(
        (code, body.as_str()),
        (404, r#"{"error":"proxy not found","status":404}"#)
    );
    let (code, _) = curl(&api, &["-A", "Mozilla/5.0", "http://toxiproxy/proxies"]);
    assert_eq!(code, 403);
    let (code, _) = curl(&api, &["-X", "DELETE", "http://toxiproxy/version"]);
    assert_eq!(code, 405);
    let (code, body) = curl(&api, &["http://toxiproxy/proxies"]);
    assert_eq!((code, body.as_str()), (200, "{}"));
    let (code, _) = curl(&api, &["-X", "POST", "http://toxiproxy/reset"]);
    assert_eq!(code, 204);
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(!api.exists(), "the API left its socket file behind");
}

/// `POST` (or another method) with a JSON body; returns status and body.
fn call(api: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let url = format!("http://toxiproxy{path}");
    if body.is_empty() {
        curl(api, &["-X", method, &url])
    } else {
        curl(api, &["-X", method, "--data", body, &url])
    }
}

#[test]
fn the_api_refuses_what_it_cannot_do_with_the_status_toxiproxy_uses() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api.sock");
    let d = dir.path().display();
    let (proxy, _) = Proxy::start(
        &["--api", api.to_str().unwrap(), "--framing", "none"],
        "api listening on ",
    );
    // A listen path that is a regular file: the proxy cannot start (500).
    let file = dir.path().join("file");
    std::fs::write(&file, "not a socket").unwrap();
    let body = format!(
        r#"{{"name":"f","listen":"{}","upstream":"{d}/b.sock"}}"#,
        file.display()
    );
    let (code, body) = call(&api, "POST", "/proxies", &body);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("not a socket"), "{body}");
    // /populate names the entry that lacks a field, and creates nothing.
    let body = format!(
        r#"[{{"name":"ok","listen":"{d}/a.sock","upstream":"{d}/b.sock"}},{{"name":"x"}}]"#
    );
    let (code, body) = call(&api, "POST", "/populate", &body);
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            r#"{"error":"missing required field: upstream at proxy 2","status":400}"#
        )
    );
    let body = format!(r#"[{{"name":"p","listen":"{d}/a.sock","upstream":"{d}/b.sock"}}]"#);
    let (code, body) = call(&api, "POST", "/populate", &body);
    assert_eq!(code, 201, "{body}");
    assert!(body.starts_with(r#"{"proxies":[{"#), "{body}");
    let toxics = "/proxies/p/toxics";
    for (toxic, problem) in [
        (
            r#"{"type":"latency","attributes":{"latncy":1}}"#,
            "has no attribute `latncy`",
        ),
        (
            r#"{"type":"swap","attributes":{"frame":1}}"#,
            "reads no frames",
        ),
        (
            r#"{"type":"latency","toxicity":1.5}"#,
            "toxicity must be 0.0 to 1.0",
        ),
        (
            r#"{"type":"bandwidth","attributes":{"rate":0}}"#,
            "rate must be at least 1",
        ),
    ] {
        let (code, body) = call(&api, "POST", toxics, toxic);
        assert_eq!(code, 400, "{toxic}: {body}");
        assert!(body.contains(problem), "{toxic}: {body}");
    }
    let (code, _) = call(&api, "PATCH", "/proxies/p/toxics/none", "{}");
    assert_eq!(code, 404);
    let (code, _) = call(&api, "DELETE", "/proxies/p/toxics/none", "");
    assert_eq!(code, 404);
    let (code, _) = call(&api, "DELETE", "/proxies/none", "");
    assert_eq!(code, 404);
    // A toxic added with defaults: downstream, toxicity 1, named after both.
    let (code, body) = call(
        &api,
        "POST",
        toxics,
        r#"{"type":"slicer","attributes":{"average_size":4}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let toxic: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(toxic["name"], "slicer_downstream");
    assert_eq!(toxic["stream"], "downstream");
    assert_eq!(toxic["toxicity"], 1.0);
    assert_eq!(toxic["attributes"]["size_variation"], 0);
    // A refuse toxic takes the listener away for a while.
    let (code, body) = call(
        &api,
        "POST",
        toxics,
        r#"{"type":"refuse","attributes":{"after":0,"duration":60000}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let front = dir.path().join("a.sock");
    let deadline = std::time::Instant::now() + support::WAIT;
    while front.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the refuse toxic never took the listener away"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn faults_given_on_the_command_line_are_toxics_of_the_named_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api.sock");
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let _upstream = std::os::unix::net::UnixListener::bind(&back).unwrap();
    let (proxy, _) = Proxy::start(
        &[
            "--listen",
            front.to_str().unwrap(),
            "--upstream",
            back.to_str().unwrap(),
            "--fault",
            "down:latency:7@0.5",
            "--api",
            api.to_str().unwrap(),
            "--name",
            "app",
        ],
        "api listening on ",
    );
    let (code, body) = curl(&api, &["http://toxiproxy/proxies/app/toxics"]);
    assert_eq!(code, 200, "{body}");
    let toxics: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        toxics,
        serde_json::json!([{
            "name": "fault-1",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 0.5,
            "attributes": {"latency": 7, "jitter": 0},
        }])
    );
    // Removing it through the API takes it off the running proxy.
    let (code, _) = curl(
        &api,
        &[
            "-X",
            "DELETE",
            "http://toxiproxy/proxies/app/toxics/fault-1",
        ],
    );
    assert_eq!(code, 204);
    let (code, body) = curl(&api, &["http://toxiproxy/proxies/app"]);
    assert_eq!(code, 200);
    assert!(body.contains(r#""toxics":[]"#), "{body}");
    assert!(body.contains(r#""enabled":true"#), "{body}");
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
}
