//! The Rust codec against Go's `encoding/binary`, byte for byte: encodings
//! at every varint boundary, and the classification of malformed prefixes.

use udsipc::frame::{FrameDecoder, FrameError, MAX_VARINT_LEN, decode_varint, encode_varint};
use udsipc_conformance::{GoVarint, to_hex};

fn go() -> GoVarint {
    GoVarint::start().unwrap_or_else(|e| panic!("conformance needs Go: {e}"))
}

#[test]
fn encodings_match_go_at_every_varint_boundary() {
    let mut go = go();
    let mut values = vec![0u64, u64::MAX, u64::MAX - 1];
    for k in 1..64 {
        let p = 1u64 << k;
        values.extend([p - 1, p, p + 1]);
    }
    for k in 1..=9 {
        let p = 1u64 << (7 * k);
        values.extend([p - 1, p, p + 1]);
    }
    for v in values {
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(v, &mut buf);
        assert_eq!(
            to_hex(&buf[..n]),
            go.ask(&format!("enc {v}")).unwrap(),
            "value {v}"
        );
    }
}

#[test]
fn prefix_classification_matches_go_read_uvarint() {
    let mut go = go();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x80, 0x00],
        vec![0x83, 0x00],
        vec![0x80, 0x80, 0x80, 0x00],
        vec![0x80],
        vec![0xff, 0xff],
        vec![0xff; 9],
        vec![0xff; 10],
        vec![0xff; 11],
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        vec![
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ],
        vec![0xac, 0x02],
        vec![0x01, 0x99],
    ];
    let decoder = FrameDecoder::new(u64::MAX);
    for raw in cases {
        let answer = go.ask(&format!("dec {}", to_hex(&raw))).unwrap();
        let ours = match decode_varint(&raw) {
            Ok(Some((v, n))) => format!("ok {v} {n}"),
            Ok(None) => match decoder.finish(&raw) {
                Ok(()) => "err EOF".to_owned(),
                Err(FrameError::TruncatedPrefix { .. }) => "err unexpected EOF".to_owned(),
                Err(e) => format!("err {e}"),
            },
            Err(FrameError::PrefixOverflow) => {
                "err binary: varint overflows a 64-bit integer".to_owned()
            }
            Err(e) => format!("err {e}"),
        };
        assert_eq!(ours, answer, "input {}", to_hex(&raw));
    }
}
