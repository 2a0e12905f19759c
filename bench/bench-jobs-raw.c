/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-jobs-raw — the baseline of bench-jobs: a raw loopback TCP copy of
 * BYTES bytes from one memfd mapping to another (the simulated device memory
 * is a memfd), one thread per side, 1 MiB send()s, no framing, no TLS.  Both
 * mappings are written before timing, as the simulator's are.  One untimed
 * copy of the same size comes first: on some machines (a PVM guest here) the
 * first time the kernel copies from or to a page costs ten times a later one,
 * while the daemons' device memory is only ever touched from user space.
 *
 *   bench-jobs-raw BYTES [RUNS]      one line per run, "run N BYTES_PER_S",
 *                                    then "median BYTES_PER_S" (RUNS: 3)
 *   bench-jobs-raw --serve MAXBYTES  prints "ready", then reads one size per
 *                                    line and answers one BYTES_PER_S line
 *                                    each (the mappings are made and warmed
 *                                    once: what bench-jobs uses)
 *
 * A copy's bytes are compared after timing; a mismatch is fatal.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1024u * 1024u)

typedef struct Sink {
        int fd;
        uint8_t *mem;
        uint64_t size;
        int error;
} Sink;

static void die(const char *what, int r)
{
        fprintf(stderr, "bench-jobs-raw: %s: %s\n", what, strerror(r));
        exit(EXIT_FAILURE);
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static uint8_t *filled_memfd(const char *name, uint64_t size, uint8_t byte)
{
        int fd = memfd_create(name, MFD_CLOEXEC);
        uint8_t *p;

        if (fd < 0)
                die("memfd_create", errno);
        if (ftruncate(fd, (off_t) size) < 0)
                die("ftruncate", errno);
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
                die("mmap", errno);
        close(fd);
        memset(p, byte, size);
        return p;
}

static void *sink_main(void *arg)
{
        Sink *s = arg;
        uint64_t got = 0;

        while (got < s->size) {
                size_t want = s->size - got < CHUNK ? (size_t) (s->size - got) : CHUNK;
                ssize_t n = recv(s->fd, s->mem + got, want, 0);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        s->error = n < 0 ? errno : EPIPE;
                        break;
                }
                got += (uint64_t) n;
        }
        return NULL;
}

/* One copy over a fresh connection: bytes per second. */
static double run_once(const uint8_t *src, uint8_t *dst, uint64_t size)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int ls, c, r;
        uint64_t off = 0;
        pthread_t t;
        Sink s = { .mem = dst, .size = size };
        double t0, dt;

        ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (ls < 0)
                die("socket", errno);
        if (bind(ls, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(ls, 1) < 0 ||
            getsockname(ls, (struct sockaddr *) &a, &len) < 0)
                die("listen", errno);
        c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *) &a, sizeof(a)) < 0)
                die("connect", errno);
        s.fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (s.fd < 0)
                die("accept", errno);
        close(ls);

        t0 = now_s();
        r = pthread_create(&t, NULL, sink_main, &s);
        if (r != 0)
                die("pthread_create", r);
        while (off < size) {
                size_t want = size - off < CHUNK ? (size_t) (size - off) : CHUNK;
                ssize_t n = send(c, src + off, want, MSG_NOSIGNAL);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        die("send", errno);
                off += (uint64_t) n;
        }
        pthread_join(t, NULL);
        dt = now_s() - t0;
        if (s.error)
                die("recv", s.error);
        close(c);
        close(s.fd);
        if (memcmp(src, dst, size) != 0)
                die("copy check", EIO);
        return (double) size / dt;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static uint64_t parse_size(const char *arg)
{
        char *end;
        uint64_t v;

        errno = 0;
        v = strtoull(arg, &end, 10);
        if (errno || end == arg || (*end && *end != '\n') || v == 0 || v > (UINT64_C(1) << 36))
                return 0;
        return v;
}

/* --serve MAXBYTES: one size per line on stdin, one rate per line on stdout. */
static int serve(uint64_t max)
{
        uint8_t *src = filled_memfd("bench-jobs-raw-src", max, 0x5a);
        uint8_t *dst = filled_memfd("bench-jobs-raw-dst", max, 0);
        uint64_t warm = 0;
        char line[64];

        printf("ready\n");
        fflush(stdout);
        while (fgets(line, sizeof(line), stdin)) {
                uint64_t size = parse_size(line);

                if (size == 0 || size > max) {
                        printf("error: a size is 1..%" PRIu64 " bytes\n", max);
                        fflush(stdout);
                        continue;
                }
                if (size > warm) {
                        (void) run_once(src, dst, size);
                        warm = size;
                }
                printf("%.0f\n", run_once(src, dst, size));
                fflush(stdout);
        }
        munmap(src, max);
        munmap(dst, max);
        return 0;
}

int main(int argc, char **argv)
{
        uint64_t size;
        unsigned long runs = 3;
        char *end;
        double *rate;
        uint8_t *src, *dst;

        if (argc == 3 && strcmp(argv[1], "--serve") == 0) {
                size = parse_size(argv[2]);
                if (size == 0) {
                        fprintf(stderr, "bench-jobs-raw: MAXBYTES must be 1..2^36, not \"%s\"\n", argv[2]);
                        return 2;
                }
                return serve(size);
        }
        if (argc < 2 || argc > 3) {
                fprintf(stderr, "usage: bench-jobs-raw BYTES [RUNS] | --serve MAXBYTES\n");
                return 2;
        }
        size = parse_size(argv[1]);
        if (size == 0) {
                fprintf(stderr, "bench-jobs-raw: BYTES must be 1..2^36, not \"%s\"\n", argv[1]);
                return 2;
        }
        if (argc == 3) {
                runs = strtoul(argv[2], &end, 10);
                if (*end || runs == 0 || runs > 100) {
                        fprintf(stderr, "bench-jobs-raw: RUNS must be 1..100, not \"%s\"\n", argv[2]);
                        return 2;
                }
        }
        src = filled_memfd("bench-jobs-raw-src", size, 0x5a);
        dst = filled_memfd("bench-jobs-raw-dst", size, 0);
        rate = calloc(runs, sizeof(*rate));
        if (!rate)
                die("calloc", ENOMEM);
        (void) run_once(src, dst, size);
        for (unsigned long i = 0; i < runs; i++) {
                rate[i] = run_once(src, dst, size);
                printf("run %lu %.0f\n", i + 1, rate[i]);
        }
        qsort(rate, runs, sizeof(*rate), cmp_double);
        printf("median %.0f\n", runs % 2 ? rate[runs / 2] : (rate[runs / 2 - 1] + rate[runs / 2]) / 2);
        free(rate);
        munmap(src, size);
        munmap(dst, size);
        return 0;
}
