package main

import (
	"bufio"
	"encoding/json"
	"os"
	"sync"
)

// out serialises JSON lines from the handler, error callbacks and main.
var (
	outMu sync.Mutex
	out   = bufio.NewWriterSize(os.Stdout, 1<<16)
)

// event prints one JSON line and flushes it, so the Rust side sees it at once.
func event(v map[string]any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = out.Write(line)
	_ = out.WriteByte('\n')
	_ = out.Flush()
}
