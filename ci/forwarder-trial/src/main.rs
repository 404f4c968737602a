//! `forwarder-trial SOCKET FILE`: the library's forwarder pattern
//! (udsipc/examples/forwarder.rs) with a file as its sink. `incoming()`
//! with the default read-ahead (1,024 messages, 1 MiB); each body is
//! appended to FILE as one line (flushed whenever the stream is momentarily
//! empty). SIGTERM/SIGINT stop the Reader from another task while this loop
//! drains the stream until `None`; stderr's last line is
//! {"received":R,"written":W,"unhandled":U}.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: forwarder-trial SOCKET FILE".into());
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (reader, mut incoming) = udsipc::Reader::builder(&socket).systemd(false).incoming()?;
    let reader = Arc::new(reader);
    let stopper = tokio::spawn({
        let reader = Arc::clone(&reader);
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            reader.stop(Duration::from_secs(10)).await
        }
    });
    eprintln!("listening on {}", reader.socket_path().display());
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&file)?;
    let mut out = BufWriter::with_capacity(64 << 10, file);
    let mut written = 0u64;
    while let Some(msg) = incoming.recv().await {
        out.write_all(&msg.body)?;
        out.write_all(b"\n")?;
        written += 1;
        while let Some(msg) = incoming.try_recv() {
            out.write_all(&msg.body)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        out.flush()?;
    }
    out.flush()?;
    if let Err(e) = stopper.await? {
        eprintln!("warning: stop: {e}");
    }
    let m = reader.metrics();
    eprintln!(
        "{{\"received\":{},\"written\":{written},\"unhandled\":{}}}",
        m.received, m.unhandled
    );
    Ok(())
}
