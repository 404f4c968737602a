module udsipc-rs/conformance/go-varint

go 1.22
