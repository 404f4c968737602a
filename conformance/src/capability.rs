//! What a peer's platform offers that some rules assume (PROTOCOL.md
//! section 9), as a peer's `hello` lists it (PEERS.md), and which cases
//! need what. A case whose peer lacks a capability is skipped as
//! *unsupported*, with the reason, before any process is started. A leaf
//! of the crate.

/// Every capability, with the primitive behind it.
pub const ALL: &[(&str, &str)] = &[
    (
        "abstract-names",
        "Linux abstract socket names (`@name`, section 6.1)",
    ),
    (
        "peer-credentials",
        "the connecting process's IDs (SO_PEERCRED: 4.7's allow-list, 4.8's writer process)",
    ),
    (
        "notify",
        "sending a datagram to NOTIFY_SOCKET (Unix datagram sockets, 8.2)",
    ),
    (
        "socket-activation",
        "adopting an inherited listening socket as fd 3 (8.1, 8.4)",
    ),
    (
        "shutdown-read",
        "shutdown(SHUT_RD) on an accepted connection, so a stopping reader refuses writes yet reads what was sent (7.4)",
    ),
];

/// The capabilities case `id` needs from each peer it runs.
pub fn needs(id: &str) -> &'static [&'static str] {
    let section = id.split_once('-').map_or(id, |(s, _)| s);
    match section {
        "6.1" | "6.5" => &["abstract-names"],
        "4.7" | "4.8" => &["peer-credentials"],
        "8.2" => &["notify"],
        "8.1" | "8.4" => &["socket-activation"],
        "7.4" => &["shutdown-read"],
        _ => &[],
    }
}

/// What capability `name` stands for.
pub fn describe(name: &str) -> &'static str {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, what)| what)
}
