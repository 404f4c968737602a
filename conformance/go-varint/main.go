// Command go-varint answers with Go's own encoding/binary varint code, the
// codec the Go reference (github.com/Psiphon-Inc/uds-ipc) frames messages
// with. It reads one request per line on stdin and writes one answer line:
//
//	enc <decimal u64>  ->  <lowercase hex of binary.PutUvarint>
//	dec <hex bytes>    ->  ok <value> <bytes read> | err <message>
//
// "dec" reads with binary.ReadUvarint from a stream holding exactly those
// bytes, so its errors are the ones the Go Reader sees: io.EOF (clean end),
// io.ErrUnexpectedEOF (end inside a prefix) and the overflow error.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func answer(request string) string {
	op, arg, _ := strings.Cut(request, " ")
	switch op {
	case "enc":
		v, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return fmt.Sprintf("bad %v", err)
		}
		buf := make([]byte, binary.MaxVarintLen64)
		n := binary.PutUvarint(buf, v)
		return hex.EncodeToString(buf[:n])
	case "dec":
		raw, err := hex.DecodeString(arg)
		if err != nil {
			return fmt.Sprintf("bad %v", err)
		}
		r := bytes.NewReader(raw)
		v, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Sprintf("err %v", err)
		}
		return fmt.Sprintf("ok %d %d", v, len(raw)-r.Len())
	default:
		return fmt.Sprintf("bad unknown op %q", op)
	}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		fmt.Fprintln(out, answer(in.Text()))
		// One answer per request, at once: the caller waits for it.
		if err := out.Flush(); err != nil {
			os.Exit(1)
		}
	}
}
