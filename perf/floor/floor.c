/*
 * floor: the machine's own limit for WebSocket fan-out writes over loopback.
 *
 * Opens N loopback TCP connections (this process writes, a forked sink process reads), then
 * writes one pre-built ~100-byte WebSocket text frame (or K of them per write, --batch K) to
 * each of the N sockets in turn, as fast as the kernel allows, for D seconds, with plain write().
 * The sink drains with epoll and read(). Both measure their CPU with getrusage(RUSAGE_SELF).
 *
 * Reported: writes/s, frames/s, the writer's CPU ns per write (and per frame), and the total
 * CPU ns per write (writer + sink). On loopback much of the receiver's TCP work runs in the
 * sender's context, so the writer's figure is the one to compare with a server's CPU/delivery.
 *
 * Usage: floor [-n N] [-d SECONDS] [--batch K] [--size BYTES] [--label TEXT] [--no-nodelay]
 *              [--writer-cpu C] [--sink-cpu C]
 * (--no-nodelay leaves Nagle on, so the kernel may merge small writes into fewer segments;
 * --writer-cpu/--sink-cpu pin the two processes, as the scenarios pin server and bench.)
 * Output: a readable table, then one JSON line {"scenario":"floor",...}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define N_MAX 19000      /* the open-file limit here is 20,000 per process */
#define D_MAX 600.0      /* every run is bounded */
#define BATCH_MAX 1024
#define SIZE_MAX_BYTES 65535

struct sink_result {
    double cpu_s;
    uint64_t bytes;
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Busy CPU seconds of the whole machine (all but idle and iowait), from /proc/stat. */
static double machine_busy_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[10] = {0};
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                     &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (got < 8) return 0;
    long hz = sysconf(_SC_CLK_TCK);
    /* user nice system idle iowait irq softirq steal (guest time is already in user). */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
}

static void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        len -= (size_t)w;
    }
}

/* The sink: accept n connections, drain them all with epoll until every one reaches EOF. */
static void sink(int listener, int n, int ready_fd, int result_fd) {
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < n; i++) {
        int c = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) die("accept");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) die("epoll_ctl");
    }
    close(listener);
    if (write(ready_fd, "R", 1) != 1) die("ready");
    static char buf[256 * 1024];
    static struct epoll_event evs[1024];
    uint64_t bytes = 0;
    int open = n;
    while (open > 0) {
        int k = epoll_wait(ep, evs, 1024, 1000);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) {
                    bytes += (uint64_t)r;
                    if ((size_t)r < sizeof buf) break;
                    continue;
                }
                if (r == 0) {
                    close(fd);
                    open--;
                } else if (errno != EAGAIN && errno != EINTR) {
                    die("read");
                }
                break;
            }
        }
    }
    struct sink_result res = {.cpu_s = cpu_self_s(), .bytes = bytes};
    if (write(result_fd, &res, sizeof res) != (ssize_t)sizeof res) die("result");
    _exit(0);
}

int main(int argc, char **argv) {
    int n = 1000, batch = 1, size = 100, nodelay = 1, writer_cpu_id = -1, sink_cpu_id = -1;
    double duration = 5.0;
    const char *label = "floor";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-n") && v) n = atoi(v), i++;
        else if (!strcmp(a, "-d") && v) duration = atof(v), i++;
        else if (!strcmp(a, "--batch") && v) batch = atoi(v), i++;
        else if (!strcmp(a, "--size") && v) size = atoi(v), i++;
        else if (!strcmp(a, "--label") && v) label = v, i++;
        else if (!strcmp(a, "--no-nodelay")) nodelay = 0;
        else if (!strcmp(a, "--writer-cpu") && v) writer_cpu_id = atoi(v), i++;
        else if (!strcmp(a, "--sink-cpu") && v) sink_cpu_id = atoi(v), i++;
        else {
            fprintf(stderr, "usage: floor [-n N] [-d SECONDS] [--batch K] [--size BYTES] [--label T] [--no-nodelay]\n"
                            "             [--writer-cpu C] [--sink-cpu C]\n");
            return 2;
        }
    }
    if (n < 1 || n > N_MAX || duration <= 0 || duration > D_MAX || batch < 1 ||
        batch > BATCH_MAX || size < 8 || size > SIZE_MAX_BYTES) {
        fprintf(stderr, "floor: need 1<=n<=%d, 0<d<=%.0f, 1<=batch<=%d, 8<=size<=%d\n", N_MAX,
                D_MAX, BATCH_MAX, SIZE_MAX_BYTES);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    /* One unmasked server text frame of `size` bytes in total, repeated `batch` times. */
    int hdr = size - 2 <= 125 ? 2 : 4;
    int plen = size - hdr;
    char *frame = malloc((size_t)size * batch);
    if (!frame) die("malloc");
    frame[0] = (char)0x81;
    if (hdr == 2) {
        frame[1] = (char)plen;
    } else {
        frame[1] = 126;
        frame[2] = (char)(plen >> 8);
        frame[3] = (char)(plen & 0xff);
    }
    memset(frame + hdr, 'x', (size_t)plen);
    for (int b = 1; b < batch; b++) memcpy(frame + (size_t)b * size, frame, (size_t)size);
    size_t wlen = (size_t)size * batch;

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    socklen_t alen = sizeof addr;
    if (getsockname(listener, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");

    int ready[2], result[2];
    if (pipe(ready) < 0 || pipe(result) < 0) die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        pin(sink_cpu_id);
        close(ready[0]);
        close(result[0]);
        sink(listener, n, ready[1], result[1]);
    }
    pin(writer_cpu_id);
    close(listener);
    close(ready[1]);
    close(result[1]);

    int *fds = malloc(sizeof(int) * (size_t)n);
    if (!fds) die("malloc");
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0) die("socket");
        /* As servers do (default): each write goes out as its own segment. */
        if (nodelay) setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
        if (connect(fds[i], (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    }
    char r;
    if (read(ready[0], &r, 1) != 1) die("sink not ready");

    double cpu0 = cpu_self_s(), busy0 = machine_busy_s(), t0 = now_s(), t1;
    uint64_t writes = 0;
    for (;;) {
        for (int i = 0; i < n; i++) write_all(fds[i], frame, wlen);
        writes += (uint64_t)n;
        t1 = now_s();
        if (t1 - t0 >= duration) break;
    }
    double writer_cpu = cpu_self_s() - cpu0;
    double busy = machine_busy_s() - busy0;
    double wall = t1 - t0;
    for (int i = 0; i < n; i++) close(fds[i]);

    struct sink_result res;
    if (read(result[0], &res, sizeof res) != (ssize_t)sizeof res) die("sink result");
    waitpid(child, NULL, 0);
    if (res.bytes != writes * wlen)
        fprintf(stderr, "floor: sink read %llu bytes, expected %llu\n",
                (unsigned long long)res.bytes, (unsigned long long)(writes * wlen));

    double frames = (double)writes * batch;
    double w_ns = writer_cpu * 1e9 / (double)writes;
    double t_ns = (writer_cpu + res.cpu_s) * 1e9 / (double)writes;
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    printf("  scenario              floor  label=%s  %s\n", label, date);
    printf("  setup                 %d sockets, %d B frame x %d per write, %.1f s\n", n, size,
           batch, wall);
    printf("  writes                %llu (%.0f/s), frames %.0f (%.0f/s)\n",
           (unsigned long long)writes, writes / wall, frames, frames / wall);
    printf("  writer CPU            %.3f s (%.1f%%)  %.0f ns/write  %.0f ns/frame\n", writer_cpu,
           writer_cpu * 100 / wall, w_ns, writer_cpu * 1e9 / frames);
    printf("  sink CPU              %.3f s\n", res.cpu_s);
    printf("  total CPU             %.0f ns/write  %.0f ns/frame\n", t_ns,
           (writer_cpu + res.cpu_s) * 1e9 / frames);
    printf("  machine busy          %.3f s of %.3f s x %ld cores while writing  %.0f ns/write\n",
           busy, wall, sysconf(_SC_NPROCESSORS_ONLN), busy * 1e9 / (double)writes);
    printf("{\"scenario\":\"floor\",\"server\":\"%s\",\"date\":\"%s\",\"n\":%d,\"frame_bytes\":%d,"
           "\"batch\":%d,\"duration_s\":%.3f,\"writes\":%llu,\"writes_per_s\":%.0f,"
           "\"frames_per_s\":%.0f,\"writer_cpu_s\":%.3f,\"writer_cpu_ns_per_write\":%.0f,"
           "\"writer_cpu_ns_per_frame\":%.0f,\"sink_cpu_s\":%.3f,\"total_cpu_ns_per_write\":%.0f,"
           "\"total_cpu_ns_per_frame\":%.0f,\"machine_busy_s\":%.3f,\"machine_busy_ns_per_write\":%.0f,"
           "\"nodelay\":%s,\"writer_cpu\":%d,\"sink_cpu\":%d}\n",
           label, date, n, size, batch, wall, (unsigned long long)writes, writes / wall,
           frames / wall, writer_cpu, w_ns, writer_cpu * 1e9 / frames, res.cpu_s, t_ns,
           (writer_cpu + res.cpu_s) * 1e9 / frames, busy, busy * 1e9 / (double)writes,
           nodelay ? "true" : "false", writer_cpu_id, sink_cpu_id);
    return 0;
}
