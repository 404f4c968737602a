// Command toxiproxy-client drives a `udsipc proxy --api` with toxiproxy's
// own Go client library, unchanged, and checks what it sees: the API's
// answers and the bytes that cross the proxy.
//
// Usage: toxiproxy-client API_ADDR DIR
//
// It listens on DIR/back.sock as the upstream service, creates proxies on
// DIR/front*.sock through the API, and exits 0 when every check passed,
// 1 (with the failed check on stderr) otherwise. Each passed check prints
// one line `ok: ...` on stdout.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func ok(format string, args ...any) {
	fmt.Printf("ok: "+format+"\n", args...)
}

func frames(bodies ...string) []byte {
	var out []byte
	for _, b := range bodies {
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// upstream accepts connections on path and sends what each one received,
// once it ends, on the returned channel.
func upstream(path string) chan []byte {
	l, err := net.Listen("unix", path)
	if err != nil {
		fail("upstream listen: %v", err)
	}
	got := make(chan []byte, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				b, _ := io.ReadAll(c)
				got <- b
			}(c)
		}
	}()
	return got
}

// send writes wire to the proxy at front, closes its side, and returns
// what the upstream received on that connection.
func send(front string, got chan []byte, wire []byte) []byte {
	c, err := net.Dial("unix", front)
	if err != nil {
		fail("dial %s: %v", front, err)
	}
	_, _ = c.Write(wire)
	_ = c.(*net.UnixConn).CloseWrite()
	defer c.Close()
	select {
	case b := <-got:
		return b
	case <-time.After(30 * time.Second):
		fail("the upstream got nothing from %s", front)
	}
	return nil
}

func status(err error) int {
	var api *toxiproxy.ApiError
	if errors.As(err, &api) {
		return api.Status
	}
	return 0
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: toxiproxy-client API_ADDR DIR")
	}
	client := toxiproxy.NewClient(os.Args[1])
	dir := os.Args[2]
	front, back := filepath.Join(dir, "front.sock"), filepath.Join(dir, "back.sock")
	got := upstream(back)

	version, err := client.Version()
	if err != nil || !strings.Contains(string(version), "udsipc") {
		fail("version: %q %v", version, err)
	}
	ok("version %s", strings.TrimSpace(string(version)))

	proxy, err := client.CreateProxy("svc", front, back)
	if err != nil || !proxy.Enabled || proxy.Listen != front || proxy.Upstream != back {
		fail("create: %+v %v", proxy, err)
	}
	ok("created proxy svc")

	wire := frames("a", "bb", "ccc")
	if b := send(front, got, wire); string(b) != string(wire) {
		fail("no toxic: upstream got %v", b)
	}
	ok("bytes pass untouched")

	toxic, err := proxy.AddToxic("", "drop_after_frames", "upstream", 1, toxiproxy.Attributes{"frames": 2})
	if err != nil || toxic.Name != "drop_after_frames_upstream" || toxic.Stream != "upstream" {
		fail("add drop_after_frames: %+v %v", toxic, err)
	}
	if b := send(front, got, wire); string(b) != string(frames("a", "bb")) {
		fail("drop_after_frames 2: upstream got %v", b)
	}
	ok("drop_after_frames cut after 2 frames")

	if _, err := proxy.UpdateToxic("drop_after_frames_upstream", 1, toxiproxy.Attributes{"frames": 1}); err != nil {
		fail("update toxic: %v", err)
	}
	if b := send(front, got, wire); string(b) != string(frames("a")) {
		fail("drop_after_frames 1: upstream got %v", b)
	}
	ok("updated toxic cut after 1 frame")

	if err := proxy.RemoveToxic("drop_after_frames_upstream"); err != nil {
		fail("remove toxic: %v", err)
	}
	if b := send(front, got, wire); string(b) != string(wire) {
		fail("after remove: upstream got %v", b)
	}
	ok("removed toxic, bytes pass again")

	latency, err := proxy.AddToxic("slow", "latency", "", 1, toxiproxy.Attributes{"latency": 1})
	if err != nil || latency.Stream != "downstream" || latency.Attributes["jitter"] != float64(0) {
		fail("add latency: %+v %v", latency, err)
	}
	if _, err := proxy.AddToxic("slow", "latency", "", 1, toxiproxy.Attributes{}); status(err) != 409 {
		fail("duplicate toxic name: want 409, got %v", err)
	}
	if _, err := proxy.AddToxic("x", "bogus", "", 1, nil); status(err) != 400 {
		fail("invalid type: want 400, got %v", err)
	}
	if _, err := proxy.AddToxic("y", "latency", "sideways", 1, nil); status(err) != 400 {
		fail("invalid stream: want 400, got %v", err)
	}
	if _, err := client.Proxy("nope"); status(err) != 404 {
		fail("missing proxy: want 404, got %v", err)
	}
	if _, err := client.CreateProxy("svc", front, back); status(err) != 409 {
		fail("proxy exists: want 409, got %v", err)
	}
	ok("errors: 409, 400, 400, 404, 409")

	if err := proxy.Disable(); err != nil || proxy.Enabled {
		fail("disable: %v", err)
	}
	if c, err := net.Dial("unix", front); err == nil {
		c.Close()
		fail("a disabled proxy accepted a connection")
	}
	if err := proxy.Enable(); err != nil || !proxy.Enabled {
		fail("enable: %v", err)
	}
	toxics, err := proxy.Toxics()
	if err != nil || len(toxics) != 1 || toxics[0].Name != "slow" {
		fail("toxics after enable: %+v %v", toxics, err)
	}
	if b := send(front, got, wire); string(b) != string(wire) {
		fail("after enable: upstream got %v", b)
	}
	ok("disable refuses connections, enable keeps the toxics")

	front2 := filepath.Join(dir, "front2.sock")
	populated, err := client.Populate([]toxiproxy.Proxy{{Name: "svc2", Listen: front2, Upstream: back, Enabled: true}})
	if err != nil || len(populated) != 1 || populated[0].Name != "svc2" || !populated[0].Enabled {
		fail("populate: %+v %v", populated, err)
	}
	if b := send(front2, got, wire); string(b) != string(wire) {
		fail("populated proxy: upstream got %v", b)
	}
	ok("populate created svc2")

	if err := client.ResetState(); err != nil {
		fail("reset: %v", err)
	}
	if toxics, err := proxy.Toxics(); err != nil || len(toxics) != 0 {
		fail("toxics after reset: %+v %v", toxics, err)
	}
	ok("reset removed every toxic")

	if err := proxy.Delete(); err != nil {
		fail("delete: %v", err)
	}
	proxies, err := client.Proxies()
	if err != nil || len(proxies) != 1 || proxies["svc2"] == nil {
		fail("proxies after delete: %+v %v", proxies, err)
	}
	ok("deleted svc")
}
