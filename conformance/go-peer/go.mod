module udsipc-rs/conformance/go-peer

go 1.24.0

require github.com/Psiphon-Inc/uds-ipc v0.0.0-20251007150957-166e89b034be
