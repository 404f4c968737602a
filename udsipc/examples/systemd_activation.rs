//! systemd socket activation: the Reader adopts the listening socket systemd
//! passed (fd 3, `LISTEN_FDS`/`LISTEN_PID`) instead of binding one, and
//! tells systemd `READY=1` when `NOTIFY_SOCKET` is set. The unit files are
//! in `examples/systemd/`. Try it without installing anything:
//!
//! ```sh
//! cargo build -p udsipc --example systemd_activation
//! systemd-socket-activate -l /tmp/udsipc-demo.sock \
//!     target/debug/examples/systemd_activation /tmp/udsipc-demo.sock 3
//! # in another shell: send three messages, e.g. with the Go or Rust writer
//! ```
//!
//! Arguments: the socket path (used only when not activated) and how many
//! messages to receive before stopping (0 = until Ctrl-C).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "/tmp/udsipc-demo.sock".to_owned());
    let want: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(0);

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let reader = udsipc::Reader::builder(&path).start(move |msg: &[u8]| {
        println!("received {:?}", String::from_utf8_lossy(msg));
        if counter.fetch_add(1, Ordering::Relaxed) + 1 == want {
            let _ = done_tx.send(());
        }
        Ok(())
    })?;
    println!(
        "listening on {} (socket-activated: {})",
        reader.socket_path().display(),
        reader.is_socket_activated()
    );
    if want > 0 {
        done_rx.recv()?;
    } else {
        // Until the process is killed (systemd sends SIGTERM on stop).
        loop {
            std::thread::park();
        }
    }
    reader.stop_blocking(Duration::from_secs(5))?;
    println!("received {} message(s)", received.load(Ordering::Relaxed));
    Ok(())
}
