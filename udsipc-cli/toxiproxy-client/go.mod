module github.com/udsipc-rs/udsipc-testkit/toxiproxy-client

go 1.23.0

require github.com/Shopify/toxiproxy/v2 v2.12.0
