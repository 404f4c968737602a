// go-peer drives the Go reference (github.com/Psiphon-Inc/uds-ipc) for the
// Rust project's benchmarks and conformance checks. It speaks the same
// command-line contract as the Rust runner's hidden `peer` subcommand:
//
//	go-peer bench -role reader -socket PATH -count N -size S [-latency]
//	go-peer bench -role writer -socket PATH -count N -size S [-rate R]
//
// The reader binds PATH, prints "ready" on stdout once listening, receives N
// messages and prints one JSON line (latency over the messages after the
// first 10%, the warm-up):
//
//	{"role":"reader","msgs":N,"bytes":B,"first_ns":T0,"last_ns":T1,"allocs":A,
//	 "latency_ns":[p50,p99]}
//
// The writer connects, sends N messages of S bytes (at R messages per
// second when -rate is given, each starting with its CLOCK_MONOTONIC send
// time), drains, and prints {"role":"writer","msgs":N,"bytes":B,
// "start_ns":T,"end_ns":T,"allocs":A}. Times are CLOCK_MONOTONIC
// nanoseconds, shared by all processes of the machine. allocs counts heap
// allocations (runtime.MemStats.Mallocs) over the last alloc_msgs messages:
// after the warm-up, the first 10% of the messages delivered (reader) or
// written (writer), as the Rust side does.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	udsipc "github.com/Psiphon-Inc/uds-ipc"
)

// monotonicNs reads CLOCK_MONOTONIC, the clock the Rust side reads too.
// cpuNs is this process's user + system CPU time so far (every thread), in
// ns: the bench reports the CPU of its transfer window, not of start-up.
func cpuNs() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func monotonicNs() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	_, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		panic(errno)
	}
	return ts.Nano()
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

func emit(v any) {
	out, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go-peer: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "read" {
		runRead(os.Args[2:])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "write" {
		runWrite(os.Args[2:])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "hello" {
		event(map[string]any{"event": "hello", "name": "go", "profile": "go-reference", "roles": []string{"read", "write"},
			"capabilities": []string{"abstract-names", "peer-credentials", "notify", "socket-activation", "shutdown-read"}})
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "bench" {
		// The peer contract (conformance/PEERS.md): 127 = role not supported.
		fmt.Fprintln(os.Stderr, "usage: go-peer hello | read --socket P ... | write --socket P ... | bench -role reader|writer -socket PATH -count N -size S [-rate R] [-latency]")
		os.Exit(127)
	}
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	role := fs.String("role", "", "reader or writer")
	socket := fs.String("socket", "", "socket path")
	count := fs.Int64("count", 0, "messages")
	size := fs.Int("size", 0, "bytes per message")
	rate := fs.Float64("rate", 0, "writer: messages per second, stamped with send times (0: as fast as possible)")
	latency := fs.Bool("latency", false, "reader: messages carry send times; report p50/p99 one-way latency")
	_ = fs.Parse(os.Args[2:])
	if *socket == "" || *count <= 0 || *size <= 0 {
		fail("-socket, -count and -size are required")
	}
	switch *role {
	case "reader":
		runReader(*socket, *count, *size, *latency)
	case "writer":
		runWriter(*socket, *count, *size, *rate)
	default:
		fail("-role must be reader or writer")
	}
}

func runReader(socket string, count int64, size int, latency bool) {
	var received, bytes, first, last int64
	var warmAllocs uint64
	warm := max(count/10, 1)
	var lat []int64
	if latency {
		lat = make([]int64, 0, count)
	}
	done := make(chan struct{})
	reader, err := udsipc.NewReader(func(data []byte) error {
		now := monotonicNs()
		n := atomic.AddInt64(&received, 1)
		if n == 1 {
			atomic.StoreInt64(&first, now)
		}
		if n == warm {
			atomic.StoreUint64(&warmAllocs, mallocs())
		}
		atomic.AddInt64(&bytes, int64(len(data)))
		if latency && n > warm && len(data) >= 8 {
			lat = append(lat, now-int64(binary.LittleEndian.Uint64(data)))
		}
		if n == count {
			atomic.StoreInt64(&last, now)
			close(done)
		}
		return nil
	}, socket, udsipc.WithMaxMessageSize(uint64(max(size, 1))))
	if err != nil {
		fail("NewReader: %v", err)
	}
	if err := reader.Start(); err != nil {
		fail("reader Start: %v", err)
	}
	fmt.Println("ready")
	cpuStart := cpuNs()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		fail("timed out: %d of %d messages", atomic.LoadInt64(&received), count)
	}
	cpu := cpuNs() - cpuStart
	allocs := mallocs() - atomic.LoadUint64(&warmAllocs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = reader.Stop(ctx)
	result := map[string]any{
		"role": "reader", "msgs": received, "bytes": bytes,
		"first_ns": first, "last_ns": last, "allocs": allocs, "alloc_msgs": max(count-warm, 1),
		"cpu_ns": cpu,
	}
	if latency && len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		result["latency_ns"] = []int64{lat[len(lat)/2], lat[(len(lat)*99)/100]}
	}
	emit(result)
}

func runWriter(socket string, count int64, size int, rate float64) {
	// As the Go reference's own benchmarks do: a queue that holds every
	// message, so WriteMessage never drops.
	writer, err := udsipc.NewWriter(socket, udsipc.WithMaxBufferedWrites(uint32(min(count+100, 1<<31))))
	if err != nil {
		fail("NewWriter: %v", err)
	}
	writer.Start()
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	// Allocations count from the moment the warm-up messages have been
	// written (sends run ahead of writes by up to the queue's capacity).
	type mark struct{ allocs, sent uint64 }
	marked := make(chan mark, 1)
	finished := make(chan struct{})
	go func() {
		warm := uint64(max(count/10, 1))
		for {
			sent, _, _, _ := writer.GetMetrics()
			select {
			case <-finished:
				marked <- mark{mallocs(), sent}
				return
			default:
			}
			if sent >= warm {
				marked <- mark{mallocs(), sent}
				return
			}
			// Coarse: this goroutine's wake-ups are CPU the writer is charged.
			time.Sleep(time.Millisecond)
		}
	}()
	cpuStart := cpuNs()
	start := monotonicNs()
	if rate > 0 {
		interval := time.Duration(float64(time.Second) / rate)
		begin := time.Now()
		for i := int64(0); i < count; i++ {
			if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
			// The reference keeps the slice until it is written: a new one each time.
			msg := make([]byte, max(size, 8))
			binary.LittleEndian.PutUint64(msg, uint64(monotonicNs()))
			send(writer, msg)
		}
	} else {
		for i := int64(0); i < count; i++ {
			send(writer, payload)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := writer.Stop(ctx); err != nil {
		fail("writer Stop: %v", err)
	}
	end := monotonicNs()
	cpu := cpuNs() - cpuStart
	endAllocs := mallocs()
	close(finished)
	m := <-marked
	sent, dropped, failed, _ := writer.GetMetrics()
	emit(map[string]any{
		"role": "writer", "msgs": sent, "bytes": int64(sent) * int64(size),
		"start_ns": start, "end_ns": end, "allocs": endAllocs - m.allocs,
		"alloc_msgs": max(uint64(count)-m.sent, 1),
		"dropped":    dropped, "failed": failed, "cpu_ns": cpu,
	})
}

// send queues msg, yielding while the queue is full (it never is with the
// queue sized above, but a peer must not lose messages).
func send(w *udsipc.Writer, msg []byte) {
	for {
		err := w.WriteMessage(msg)
		if err == nil {
			return
		}
		if !errors.Is(err, udsipc.ErrBufferFull) {
			fail("WriteMessage: %v", err)
		}
		runtime.Gosched()
	}
}
