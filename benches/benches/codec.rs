//! The wire codec without IO (`cargo bench -p udsipc-benches --bench
//! codec`): varint prefixes, framing a message into a buffer, and finding
//! every frame in a buffer, as the Writer and Reader do per message; and
//! the tokio-util codecs side by side: `udsipc::codec::UvarintCodec` (Go
//! framing) against unsigned-varint's `UviBytes` (same bytes for minimal
//! prefixes), encoding into and decoding from a `BytesMut` as `Framed` does.
//! Allocations per message are printed after each benchmark.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::codec::{Decoder, Encoder};
use udsipc::codec::UvarintCodec;
use udsipc::frame::{
    FrameDecoder, MAX_VARINT_LEN, Next, decode_varint, encode_frame, encode_varint,
};
use udsipc_benches::alloc::{Counting, allocations};
use udsipc_benches::harness::Tally;
use unsigned_varint::codec::UviBytes;

#[global_allocator]
static ALLOC: Counting = Counting;

const FRAMES: usize = 1000;

fn varint(c: &mut Criterion) {
    let mut g = c.benchmark_group("Codec/Varint");
    for value in [1u64, 300, 1 << 20, u64::MAX] {
        g.bench_function(format!("Encode_{value}"), |b| {
            let mut out = [0u8; MAX_VARINT_LEN];
            b.iter(|| encode_varint(black_box(value), &mut out))
        });
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(value, &mut buf);
        g.bench_function(format!("Decode_{value}"), |b| {
            b.iter(|| decode_varint(black_box(&buf[..n])))
        });
    }
    g.finish();
}

/// Times `iters` rounds of `work` over `FRAMES` messages; tallies allocations.
fn per_frames(tally: &mut Tally, iters: u64, mut work: impl FnMut()) -> Duration {
    let before = allocations();
    let start = Instant::now();
    for _ in 0..iters {
        work();
    }
    let elapsed = start.elapsed();
    tally.add(allocations() - before, iters * FRAMES as u64);
    elapsed
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("Codec/Frames");
    for size in [64usize, 1024, 10 * 1024] {
        let body = vec![0x42u8; size];
        g.throughput(Throughput::Bytes((size * FRAMES) as u64));

        let mut out = Vec::with_capacity((size + MAX_VARINT_LEN) * FRAMES);
        let mut tally = Tally::default();
        g.bench_function(format!("Encode_{size}B_x{FRAMES}"), |b| {
            b.iter_custom(|iters| {
                per_frames(&mut tally, iters, || {
                    out.clear();
                    for _ in 0..FRAMES {
                        encode_frame(black_box(&body), &mut out);
                    }
                })
            })
        });
        tally.print(&format!("Codec/Frames/Encode_{size}B"));

        let decoder = FrameDecoder::new(1 << 20);
        let wire = out.clone();
        let mut tally = Tally::default();
        g.bench_function(format!("Decode_{size}B_x{FRAMES}"), |b| {
            b.iter_custom(|iters| {
                per_frames(&mut tally, iters, || {
                    let (wire, mut total, mut at) = (black_box(&wire), 0usize, 0);
                    while let Ok(Next::Frame { body, consumed }) = decoder.decode(&wire[at..]) {
                        total += body.len();
                        at += consumed;
                    }
                    assert_eq!(total, size * FRAMES);
                })
            })
        });
        tally.print(&format!("Codec/Frames/Decode_{size}B"));
    }
    g.finish();
}

/// Encodes `FRAMES` copies of `body` with `codec`, then decodes them back
/// from one buffer (as `FramedRead` does after a large read).
fn round_trip<C>(codec: &mut C, body: &Bytes, wire: &mut BytesMut) -> usize
where
    C: Encoder<Bytes> + Decoder<Item = BytesMut>,
    <C as Encoder<Bytes>>::Error: std::fmt::Debug,
    <C as Decoder>::Error: std::fmt::Debug,
{
    wire.clear();
    for _ in 0..FRAMES {
        codec.encode(body.clone(), wire).unwrap();
    }
    let mut total = 0;
    while let Some(frame) = codec.decode(wire).unwrap() {
        total += frame.len();
    }
    total
}

fn tokio_util_codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("Codec/TokioUtil");
    for size in [64usize, 1024, 10 * 1024] {
        let body = Bytes::from(vec![0x42u8; size]);
        g.throughput(Throughput::Bytes((size * FRAMES) as u64));
        let mut wire = BytesMut::with_capacity((size + MAX_VARINT_LEN) * FRAMES);

        let mut codec = UvarintCodec::new();
        let mut tally = Tally::default();
        g.bench_function(format!("UvarintCodec_{size}B_x{FRAMES}"), |b| {
            b.iter_custom(|iters| {
                per_frames(&mut tally, iters, || {
                    let total = round_trip(&mut codec, black_box(&body), &mut wire);
                    assert_eq!(total, size * FRAMES);
                })
            })
        });
        tally.print(&format!("Codec/TokioUtil/UvarintCodec_{size}B"));

        let mut codec = UviBytes::<Bytes>::default();
        let mut tally = Tally::default();
        g.bench_function(format!("UviBytes_{size}B_x{FRAMES}"), |b| {
            b.iter_custom(|iters| {
                per_frames(&mut tally, iters, || {
                    let total = round_trip(&mut codec, black_box(&body), &mut wire);
                    assert_eq!(total, size * FRAMES);
                })
            })
        });
        tally.print(&format!("Codec/TokioUtil/UviBytes_{size}B"));
    }
    g.finish();
}

criterion_group! {
    name = codec;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = varint, frames, tokio_util_codecs
}
criterion_main!(codec);
