//! `udsipc::codec::UvarintCodec` against Go's `encoding/binary`, on random
//! prefixes (valid, non-minimal, truncated, overflowing) and lengths: the
//! codec reads each prefix as `binary.ReadUvarint` does and encodes each
//! length as `binary.PutUvarint` does.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_util::codec::{Decoder, Encoder};
use udsipc::codec::{CodecError, UvarintCodec};
use udsipc::frame::FrameError;
use udsipc_conformance::{GoVarint, to_hex};

fn go() -> GoVarint {
    GoVarint::start().unwrap_or_else(|e| panic!("conformance needs Go: {e}"))
}

/// What the codec makes of `raw` followed by end of stream, in go-varint's
/// answer format where the two can be compared: a prefix Go reads as
/// `ok v n` must be one the codec reads as a frame of `v` bytes once they
/// follow.
fn codec_answer(raw: &[u8]) -> String {
    let mut codec = UvarintCodec::new()
        .max_message_size(u64::MAX)
        .skip_empty(false);
    let mut buf = BytesMut::from(raw);
    match codec.decode_eof(&mut buf) {
        Ok(None) => "err EOF".to_owned(),
        Ok(Some(frame)) => format!("ok {} {}", frame.len(), raw.len() - buf.len() - frame.len()),
        Err(CodecError::Frame(FrameError::PrefixOverflow)) => {
            "err binary: varint overflows a 64-bit integer".to_owned()
        }
        Err(CodecError::Frame(FrameError::TruncatedPrefix { .. })) => {
            "err unexpected EOF".to_owned()
        }
        // A complete prefix with its body missing: report the prefix alone.
        Err(CodecError::Frame(FrameError::TruncatedBody { expected, .. })) => {
            let prefix_len = udsipc::frame::decode_varint(raw).unwrap().unwrap().1;
            format!("ok {expected} {prefix_len}")
        }
        Err(e) => format!("err {e}"),
    }
}

fn prefix_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Anything up to 11 bytes, continuation bits mostly set.
        prop::collection::vec(prop_oneof![3 => 0x80u8..=0xff, 1 => 0x00u8..=0x7f], 0..=11),
        // Non-minimal zero/small values padded with 0x80 groups.
        (0usize..=9, 0u8..=0x7f).prop_map(|(pad, last)| {
            let mut v = vec![0x80; pad];
            v.push(last);
            v
        }),
    ]
}

#[test]
fn codec_reads_random_prefixes_as_go_read_uvarint_does() {
    let go = std::cell::RefCell::new(go());
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        ..Config::default()
    });
    runner
        .run(&prefix_bytes(), |raw| {
            let want = go
                .borrow_mut()
                .ask(&format!("dec {}", to_hex(&raw)))
                .unwrap();
            // Go consumes the prefix only; the codec reads it and, when the
            // declared length is small, the body we append.
            let ours = match want.strip_prefix("ok ") {
                Some(rest) => {
                    let (v, n): (u64, usize) = {
                        let mut it = rest.split(' ');
                        (
                            it.next().unwrap().parse().unwrap(),
                            it.next().unwrap().parse().unwrap(),
                        )
                    };
                    let mut stream = raw[..n].to_vec();
                    if v <= 4096 {
                        stream.extend(std::iter::repeat_n(0xa5, v as usize));
                    }
                    codec_answer(&stream)
                }
                None => codec_answer(&raw),
            };
            prop_assert_eq!(ours, want, "input {}", to_hex(&raw));
            Ok(())
        })
        .unwrap();
}

#[test]
fn codec_encodes_random_lengths_as_go_put_uvarint_does() {
    let go = std::cell::RefCell::new(go());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    runner
        .run(&(1usize..70_000), |len| {
            let mut dst = BytesMut::new();
            UvarintCodec::new()
                .encode(Bytes::from(vec![0u8; len]), &mut dst)
                .unwrap();
            let prefix = &dst[..dst.len() - len];
            prop_assert_eq!(
                to_hex(prefix),
                go.borrow_mut().ask(&format!("enc {len}")).unwrap()
            );
            Ok(())
        })
        .unwrap();
}
