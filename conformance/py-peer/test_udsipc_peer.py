"""The Python peer's own tests: conformance/vectors.json through its frame
decoder, whole, one byte at a time and split at every position; its varint
encoder against the vectors' minimal prefixes; and how it reads names."""

import json
import os
import unittest

import udsipc_peer as peer

HERE = os.path.dirname(os.path.abspath(__file__))


def load():
    with open(os.path.join(HERE, "..", "vectors.json")) as f:
        doc = json.load(f)
    return doc["default_max_message_size"], doc["vectors"]


def receive(max_size, chunks):
    d = peer.Decoder(max_size)
    msgs = []
    for chunk in chunks:
        for kind, value in d.feed(chunk):
            if kind == "error":
                return msgs, value
            msgs.append(value)
    return msgs, d.eof()


class Vectors(unittest.TestCase):
    def test_every_vector_whole_bytewise_and_split(self):
        default, vectors = load()
        for v in vectors:
            data = bytes.fromhex(v["input"])
            max_size = v.get("max_message_size", default)
            want = ([bytes.fromhex(m) for m in v["messages"]],
                    v.get("context") if v["outcome"] == "error" else None)
            with self.subTest(v["name"]):
                self.assertEqual(receive(max_size, [data]), want)
                self.assertEqual(receive(max_size, [data[i:i + 1] for i in range(len(data))]), want)
                for at in range(len(data) + 1):
                    self.assertEqual(receive(max_size, [data[:at], data[at:]]), want)

    def test_minimal_encoding_round_trips(self):
        for n in [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**64 - 1]:
            enc = peer.encode_uvarint(n)
            self.assertEqual(peer.decode_uvarint(enc), (n, len(enc)))
            self.assertTrue(len(enc) == 1 or enc[-1] != 0, n)
        self.assertEqual(peer.encode_uvarint(2**64 - 1).hex(), "ffffffffffffffffff01")


class Names(unittest.TestCase):
    def test_at_and_nul_are_abstract_others_are_paths(self):
        self.assertEqual(peer.parse_name("@app"), (b"\0app", None))
        self.assertEqual(peer.parse_name("/run/a.sock"), (b"/run/a.sock", b"/run/a.sock"))
        self.assertEqual(peer.parse_name("a@b"), (b"a@b", b"a@b"))


if __name__ == "__main__":
    unittest.main()
