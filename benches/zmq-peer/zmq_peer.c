/*
 * The ZeroMQ column of `udsipc bench`: libzmq PUSH -> PULL over ipc://, one
 * side per process, speaking the runner's peer contract (benches/src/peer.rs):
 *
 *   zmq-peer --role reader --socket PATH --count N --size S [--latency]
 *   zmq-peer --role writer --socket PATH --count N --size S [--rate R]
 *
 * The reader binds a PULL socket, prints "ready", receives N messages and
 * prints one JSON report; the writer connects a PUSH socket, sends N
 * messages (paced at R per second with a CLOCK_MONOTONIC send time in the
 * first 8 bytes when --rate is given), closes with an unlimited linger so
 * zmq_ctx_term returns once everything was handed to the socket, and prints
 * its report. Measured the way libzmq's own perf/local_thr and remote_thr
 * do: zmq_send of one buffer per message, zmq_msg_recv into one zmq_msg_t.
 *
 * Set like udsipc's Writer (the runner compiles them in): the send
 * high-water mark is the Writer's default queue bound in messages
 * (UDSIPC_HWM), the receive high-water mark the same, SO_SNDBUF the
 * Writer's default (UDSIPC_SNDBUF); SO_RCVBUF is left to the system, as the
 * Reader leaves it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zmq.h>

#ifndef UDSIPC_HWM
#define UDSIPC_HWM 10000
#endif
#ifndef UDSIPC_SNDBUF
#define UDSIPC_SNDBUF (256 * 1024)
#endif

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* User + system CPU of this process so far (every thread, libzmq's I/O
 * thread included), ns: the report gives the transfer window's. */
static int64_t cpu_ns(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static void fail(const char *what) {
    fprintf(stderr, "zmq-peer: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void set_int(void *sock, int option, int value, const char *what) {
    if (zmq_setsockopt(sock, option, &value, sizeof value) != 0) fail(what);
}

static int reader(const char *endpoint, long long count, size_t size, int latency) {
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_PULL);
    if (!sock) fail("zmq_socket");
    set_int(sock, ZMQ_RCVHWM, UDSIPC_HWM, "ZMQ_RCVHWM");
    if (zmq_bind(sock, endpoint) != 0) fail("zmq_bind");
    printf("ready\n");
    fflush(stdout);
    int64_t cpu_start = cpu_ns();
    long long warm = count * 10 / 100;
    int64_t *lat = NULL;
    long long nlat = 0;
    if (latency) {
        lat = malloc(sizeof(int64_t) * (size_t)(count > 0 ? count : 1));
        if (!lat) return 1;
    }
    int64_t first_ns = 0, last_ns = 0;
    long long msgs = 0;
    unsigned long long bytes = 0;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (msgs < count) {
        int n = zmq_msg_recv(&msg, sock, 0);
        if (n < 0) {
            if (zmq_errno() == EINTR) continue;
            fail("zmq_msg_recv");
        }
        int64_t now = monotonic_ns();
        if (msgs == 0) first_ns = now;
        last_ns = now;
        msgs++;
        bytes += (unsigned long long)n;
        if (latency && msgs > warm && n >= 8) {
            int64_t sent;
            memcpy(&sent, zmq_msg_data(&msg), 8);
            lat[nlat++] = now - sent;
        }
    }
    int64_t cpu = cpu_ns() - cpu_start;
    zmq_msg_close(&msg);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    printf("{\"role\":\"reader\",\"msgs\":%lld,\"bytes\":%llu,\"first_ns\":%lld,"
           "\"last_ns\":%lld,\"allocs\":0,\"alloc_msgs\":0,\"cpu_ns\":%lld",
           msgs, bytes, (long long)first_ns, (long long)last_ns, (long long)cpu);
    if (nlat > 0) {
        qsort(lat, (size_t)nlat, sizeof(int64_t), cmp_i64);
        printf(",\"latency_ns\":[%lld,%lld]", (long long)lat[nlat / 2],
               (long long)lat[nlat * 99 / 100]);
    }
    printf("}\n");
    free(lat);
    (void)size;
    return 0;
}

static int writer(const char *endpoint, long long count, size_t size, double rate) {
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_PUSH);
    if (!sock) fail("zmq_socket");
    set_int(sock, ZMQ_SNDHWM, UDSIPC_HWM, "ZMQ_SNDHWM");
    set_int(sock, ZMQ_SNDBUF, UDSIPC_SNDBUF, "ZMQ_SNDBUF");
    set_int(sock, ZMQ_LINGER, -1, "ZMQ_LINGER");
    if (zmq_connect(sock, endpoint) != 0) fail("zmq_connect");
    size_t len = size < 8 && rate > 0 ? 8 : size;
    unsigned char *buf = malloc(len > 0 ? len : 1);
    if (!buf) return 1;
    for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)i;
    int64_t cpu_start = cpu_ns();
    int64_t start_ns = monotonic_ns();
    int64_t interval = rate > 0 ? (int64_t)(1e9 / rate) : 0;
    for (long long i = 0; i < count; i++) {
        if (interval > 0) {
            int64_t due = start_ns + i * interval;
            struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
            }
            int64_t now = monotonic_ns();
            memcpy(buf, &now, 8);
        }
        while (zmq_send(sock, buf, len, 0) < 0) {
            if (zmq_errno() != EINTR) fail("zmq_send");
        }
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    int64_t end_ns = monotonic_ns();
    int64_t cpu = cpu_ns() - cpu_start;
    printf("{\"role\":\"writer\",\"msgs\":%lld,\"bytes\":%llu,\"start_ns\":%lld,"
           "\"end_ns\":%lld,\"allocs\":0,\"alloc_msgs\":0,\"cpu_ns\":%lld}\n",
           count, (unsigned long long)count * len, (long long)start_ns, (long long)end_ns,
           (long long)cpu);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    const char *role = NULL, *socket = NULL;
    long long count = -1;
    long long size = -1;
    double rate = 0;
    int latency = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--latency")) {
            latency = 1;
        } else if (v && !strcmp(a, "--role")) {
            role = v, i++;
        } else if (v && !strcmp(a, "--socket")) {
            socket = v, i++;
        } else if (v && !strcmp(a, "--count")) {
            count = atoll(v), i++;
        } else if (v && !strcmp(a, "--size")) {
            size = atoll(v), i++;
        } else if (v && !strcmp(a, "--rate")) {
            rate = atof(v), i++;
        } else {
            fprintf(stderr, "zmq-peer: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!role || !socket || count < 0 || size < 0) {
        fprintf(stderr, "usage: zmq-peer --role reader|writer --socket PATH --count N --size S "
                        "[--rate R] [--latency]\n");
        return 2;
    }
    char endpoint[4096];
    snprintf(endpoint, sizeof endpoint, "ipc://%s", socket);
    if (!strcmp(role, "reader")) return reader(endpoint, count, (size_t)size, latency);
    if (!strcmp(role, "writer")) return writer(endpoint, count, (size_t)size, rate);
    fprintf(stderr, "zmq-peer: --role must be reader or writer\n");
    return 2;
}
