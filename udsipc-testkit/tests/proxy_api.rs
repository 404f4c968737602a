//! The toxiproxy-compatible control API, driven by toxiproxy's own Go
//! client library (built from `udsipc-testkit/toxiproxy-client` with the Go
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
        .filter(|l| l.starts_with(r#"{"fault":"drop-after-frames""#))
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
