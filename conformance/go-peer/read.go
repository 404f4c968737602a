package main

// go-peer read --socket P [--max-message-size N] [--inactivity-timeout D] [--fail-on HEX] [--panic-on HEX]
// [--max-accept-errors N] [--pause-on HEX --pause-ms N]
//
// Runs the Go Reader on P and prints JSON lines on stdout:
//
//	{"event":"ready"}                                   once listening
//	{"event":"message","len":N,"hex":"..."}             each delivered message
//	{"event":"error","context":"...","error":"..."}     each error callback
//	{"event":"metrics","received":R,"connections":C,"errors":E,"stop_error":"..."}
//
// The last line is printed after SIGTERM (or SIGINT) has stopped the Reader
// gracefully (Stop with a 10 s deadline). With --fail-on, the handler returns
// an error for messages equal to HEX (the message is printed first with
// "handler_error":true); with --panic-on, it panics for messages equal to
// HEX (after printing the message).

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	udsipc "github.com/Psiphon-Inc/uds-ipc"
)

func runRead(args []string) {
	fs := flag.NewFlagSet("read", flag.ContinueOnError)
	socket := fs.String("socket", "", "socket path")
	maxSize := fs.Uint64("max-message-size", 0, "maximum message size (unset: the Go default)")
	inactivity := fs.Duration("inactivity-timeout", 0, "inactivity timeout (0: the Go default)")
	failOn := fs.String("fail-on", "", "hex of a message the handler rejects with an error")
	panicOn := fs.String("panic-on", "", "hex of a message the handler panics on")
	pauseOn := fs.String("pause-on", "", "hex of a message the handler sleeps on")
	pauseFor := fs.Int("pause-ms", 0, "how long the handler sleeps on --pause-on, in ms")
	maxAcceptErrors := fs.Int("max-accept-errors", -1, "consecutive accept errors tolerated (unset: the Go default)")
	if err := fs.Parse(args); err != nil {
		// The peer contract (conformance/PEERS.md): 127 = flag not supported.
		os.Exit(127)
	}
	if *socket == "" {
		fail("read: --socket is required")
	}
	var reject []byte
	if *failOn != "" {
		var err error
		if reject, err = hex.DecodeString(*failOn); err != nil {
			fail("read: --fail-on: %v", err)
		}
	}
	var pause []byte
	if *pauseOn != "" {
		var err error
		if pause, err = hex.DecodeString(*pauseOn); err != nil {
			fail("read: --pause-on: %v", err)
		}
	}
	var boom []byte
	if *panicOn != "" {
		var err error
		if boom, err = hex.DecodeString(*panicOn); err != nil {
			fail("read: --panic-on: %v", err)
		}
	}
	opts := []udsipc.ReaderOption{
		udsipc.WithReaderErrorCallback(func(err error, context string) {
			event(map[string]any{"event": "error", "context": context, "error": err.Error()})
		}),
	}
	// Given explicitly, 0 is a limit too (every non-empty message refused).
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "max-message-size" {
			opts = append(opts, udsipc.WithMaxMessageSize(*maxSize))
		}
	})
	if *inactivity > 0 {
		opts = append(opts, udsipc.WithInactivityTimeout(*inactivity))
	}
	if *maxAcceptErrors >= 0 {
		opts = append(opts, udsipc.WithMaxAcceptErrors(*maxAcceptErrors))
	}
	handler := func(data []byte) error {
		rejected := reject != nil && bytes.Equal(data, reject)
		event(map[string]any{"event": "message", "len": len(data), "hex": hex.EncodeToString(data), "handler_error": rejected})
		if rejected {
			return errors.New("rejected by --fail-on")
		}
		if pause != nil && bytes.Equal(data, pause) {
			time.Sleep(time.Duration(*pauseFor) * time.Millisecond)
		}
		if boom != nil && bytes.Equal(data, boom) {
			panic("go-peer: --panic-on message")
		}
		return nil
	}
	reader, err := udsipc.NewReader(handler, *socket, opts...)
	if err != nil {
		fail("NewReader: %v", err)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	if err := reader.Start(); err != nil {
		fail("reader Start: %v", err)
	}
	event(map[string]any{"event": "ready"})
	<-signals
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopErr := ""
	if err := reader.Stop(ctx); err != nil {
		stopErr = err.Error()
	}
	received, connections, errorCount := reader.GetMetrics()
	event(map[string]any{"event": "metrics", "received": received, "connections": connections, "errors": errorCount, "stop_error": stopErr})
}
