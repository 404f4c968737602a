package main

// go-peer write --socket P [--max-buffered-writes N] [--max-backoff D] [--write-timeout D]
//
// Runs the Go Writer towards P and prints {"event":"ready"}. Each stdin
// line is one message in hex (an empty line is a zero-length message),
// queued with WriteMessage (retried while the queue is full). The line "metrics" prints the current metrics
// instead. The line "try HEX" makes one WriteMessage call and reports it
// as {"event":"write","error":"..."}. The line "stop" stops the Writer at once (drain, 30 s deadline)
// and prints {"event":"stopped","stop_error":"..."}; each message line
// after it is one WriteMessage call, reported as {"event":"write",
// "error":"..."} ("" when it returned nil). At the end of stdin the Writer
// is stopped (unless it already was) and prints, like the error callbacks,
// JSON lines:
//
//	{"event":"error","context":"...","error":"..."}
//	{"event":"metrics","sent":S,"dropped":D,"failed":F,"queue":Q,"final":true,"stop_error":"..."}

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"runtime"
	"strings"
	"time"

	udsipc "github.com/Psiphon-Inc/uds-ipc"
)

func runWrite(args []string) {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	socket := fs.String("socket", "", "socket path")
	buffered := fs.Uint("max-buffered-writes", 0, "queue capacity (0: the Go default)")
	maxBackoff := fs.Duration("max-backoff", 0, "maximum reconnect delay (0: the Go default)")
	writeTimeout := fs.Duration("write-timeout", 0, "write timeout (0: the Go default)")
	if err := fs.Parse(args); err != nil {
		// The peer contract (conformance/PEERS.md): 127 = flag not supported.
		os.Exit(127)
	}
	if *socket == "" {
		fail("write: --socket is required")
	}
	opts := []udsipc.WriterOption{
		udsipc.WithWriterErrorCallback(func(err error, context string) {
			event(map[string]any{"event": "error", "context": context, "error": err.Error()})
		}),
	}
	if *buffered > 0 {
		opts = append(opts, udsipc.WithMaxBufferedWrites(uint32(*buffered)))
	}
	if *maxBackoff > 0 {
		opts = append(opts, udsipc.WithMaxBackoff(*maxBackoff))
	}
	if *writeTimeout > 0 {
		opts = append(opts, udsipc.WithWriteTimeout(*writeTimeout))
	}
	writer, err := udsipc.NewWriter(*socket, opts...)
	if err != nil {
		fail("NewWriter: %v", err)
	}
	writer.Start()
	event(map[string]any{"event": "ready"})
	metrics := func(final bool, stopErr string) {
		sent, dropped, failed, queue := writer.GetMetrics()
		event(map[string]any{"event": "metrics", "sent": sent, "dropped": dropped, "failed": failed, "queue": queue, "final": final, "stop_error": stopErr})
	}
	stop := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := writer.Stop(ctx); err != nil {
			return err.Error()
		}
		return ""
	}
	stopped := false
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 0, 1<<16), 64<<20)
	for lines.Scan() {
		line := lines.Text()
		if line == "metrics" {
			metrics(false, "")
			continue
		}
		if line == "stop" {
			event(map[string]any{"event": "stopped", "stop_error": stop()})
			stopped = true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "try "); ok {
			msg, err := hex.DecodeString(rest)
			if err != nil {
				fail("write: try line is not hex: %v", err)
			}
			result := ""
			if err := writer.WriteMessage(msg); err != nil {
				result = err.Error()
			}
			event(map[string]any{"event": "write", "error": result})
			continue
		}
		msg, err := hex.DecodeString(line)
		if err != nil {
			fail("write: stdin line is not hex: %v", err)
		}
		if stopped {
			result := ""
			if err := writer.WriteMessage(msg); err != nil {
				result = err.Error()
			}
			event(map[string]any{"event": "write", "error": result})
			continue
		}
		for {
			err := writer.WriteMessage(msg)
			if err == nil {
				break
			}
			if !errors.Is(err, udsipc.ErrBufferFull) {
				fail("WriteMessage: %v", err)
			}
			runtime.Gosched()
		}
	}
	if err := lines.Err(); err != nil {
		fail("write: reading stdin: %v", err)
	}
	stopErr := ""
	if !stopped {
		stopErr = stop()
	}
	metrics(true, stopErr)
}
