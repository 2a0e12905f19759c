/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-stream — migration stream throughput against a baseline measured in
 * the same run (DESIGN §8), and memory during a 1 GiB-state transfer.
 *
 * Every mode moves the same bytes, a simulated device's stop-copy state,
 * from a source device to a target device over a TCP loopback connection
 * (the same sockets, made by the stream's TCP helpers), one thread per side:
 *   raw  — device read -> send() / recv() -> device write, no framing, with
 *          1 MiB buffers (as large as a stream record): the "raw loopback
 *          socket copy of the same bytes";
 *   fd   — the stream pumps in plaintext over the (fd-checked) socket;
 *   tls  — the stream pumps over TLS 1.3 PSK.
 * Also single-core AES-128-GCM (GnuTLS), encrypting and decrypting, as the
 * other TLS bound, and from it the ceiling any TLS transfer can reach on
 * this machine (tls_ceiling, below).  Device
 * memory is made and faulted in before the clock starts.  Memory: how far
 * the anonymous RSS grows during a 64 MiB and a 1 GiB transfer above its
 * level when the transfer starts (the simulated devices' memory, anonymous
 * too, is all there by then; real device memory would not show at all);
 * flat means the ratio stays near 1.
 *
 * The host is shared and noisy, so each of --runs rounds measures every mode
 * once (and AES-GCM), in an order that rotates from round to round; a mode's
 * figure is its median over the rounds, a ratio the median of the ratios
 * within each round.  Where the time goes: the CPU time of each side's
 * thread per GiB (the busier side bounds the throughput) and how often each
 * side waited in poll().
 *
 * The TLS ceiling: a TLS transfer does at least what the raw copy does on
 * each side (its CPU time per GiB, measured in the same round) plus the
 * cipher (encrypting on the source, decrypting on the target, each measured
 * alone on one core).  With one thread per side the busier side bounds it;
 * however the work were spread over threads, both sides together cannot use
 * more CPU time than the machine's CPUs have (both ends run here):
 *   ceiling = min(1 / max(src_raw + enc, tgt_raw + dec),
 *                 cpus / (src_raw + enc + tgt_raw + dec))
 * tls_vs_ceiling says how much of that the stream reaches, and
 * tls_target_reachable whether 0.8 x raw lies under the ceiling at all.
 *
 * Output: "name value" lines.  Options: --size-mib N (throughput state size,
 * default 512), --runs N (rounds, default 3), --record-kib N (data per
 * record, default 1024), --rss-gib N (default 1; 0 skips it), --modes LIST
 * (some of raw,fd,tls; default all).
 */
#include <errno.h>
#include <inttypes.h>
#include <gnutls/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "stream-pump.h"

#define MIB (1024u * 1024u)
#define MAX_RUNS 31

typedef enum Mode { MODE_RAW, MODE_FD, MODE_TLS } Mode;

static size_t record_size;       /* 0 = the stream's maximum */
static char tls_cipher[64] = "none";

typedef struct Side {
        Mode mode;
        int fd;
        uint64_t mem;
        VfmigPsk psk;
        VfmigVfioDevice *dev;
        uint64_t bytes;
        int error;
        double cpu;             /* CPU seconds of this side's thread */
        unsigned waits;         /* times this side waited in poll() */
} Side;

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
        fprintf(stderr, "bench-stream: %s: %s\n", what, g_strerror(r < 0 ? -r : r));
        exit(1);
}

static VfmigVfioDevice *sim(uint64_t mem, uint64_t seed)
{
        VfmigSimDeviceConfig cfg = {
                .name = "bench", .migration_flags = VFMIG_MIGRATION_STOP_COPY, .memory_size = mem,
                .stream_type = "bench-gpu", .stream_version = 1, .fill_seed = seed,
        };
        VfmigVfioDevice *d = NULL;
        int r = vfmig_vfio_sim_open(&cfg, &d);

        if (r < 0)
                die("sim open", r);
        {
                /* A simulated device makes its memory (anonymous) on first use:
                 * make it and fault it in before the clock starts (first
                 * touches of pages cost more than the copy here).  The source
                 * gets a pattern of its seed, the target zeros. */
                g_autofree uint8_t *buf = g_malloc0(MIB);

                for (size_t i = 0; seed != 0 && i < MIB; i++)
                        buf[i] = (uint8_t) (seed * 131 + i * 7 + (i >> 12));
                for (uint64_t off = 0; off < mem; off += MIB)
                        (void) vfmig_vfio_sim_write_memory(d, off, buf, MIN((uint64_t) MIB, mem - off));
        }
        return d;
}

static __thread unsigned n_waits;       /* poll() calls of this thread */

static void wait_fd(int fd, short events)
{
        struct pollfd p = { fd, events, 0 };

        n_waits++;
        (void) poll(&p, 1, 1000);
}

/* ---- raw baseline ---- */

static void raw_source(Side *s)
{
        g_autofree uint8_t *buf = g_malloc(MIB);
        VfmigVfioData *data = NULL;
        int r = vfmig_vfio_set_state(s->dev, VFMIG_MIG_STOP_COPY, &data);

        if (r < 0)
                die("source STOP_COPY", r);
        for (;;) {
                ssize_t k = vfmig_vfio_data_read(data, buf, MIB), off = 0;

                if (k < 0)
                        die("device read", (int) k);
                if (k == 0)
                        break;
                while (off < k) {
                        ssize_t w = send(s->fd, buf + off, (size_t) (k - off), MSG_NOSIGNAL);

                        if (w < 0 && errno == EAGAIN) {
                                wait_fd(s->fd, POLLOUT);
                                continue;
                        }
                        if (w < 0)
                                die("send", errno);
                        off += w;
                }
                s->bytes += (uint64_t) k;
        }
        shutdown(s->fd, SHUT_WR);
        vfmig_vfio_data_close(data);
}

static void raw_target(Side *s)
{
        g_autofree uint8_t *buf = g_malloc(MIB);
        VfmigVfioData *data = NULL;
        int r = vfmig_vfio_set_state(s->dev, VFMIG_MIG_RESUMING, &data);

        if (r < 0)
                die("target RESUMING", r);
        for (;;) {
                ssize_t k = recv(s->fd, buf, MIB, 0), off = 0;

                if (k < 0 && errno == EAGAIN) {
                        wait_fd(s->fd, POLLIN);
                        continue;
                }
                if (k < 0)
                        die("recv", errno);
                if (k == 0)
                        break;
                while (off < k) {
                        ssize_t w = vfmig_vfio_data_write(data, buf + off, (size_t) (k - off));

                        if (w <= 0)
                                die("device write", w < 0 ? (int) w : EIO);
                        off += w;
                }
                s->bytes += (uint64_t) k;
        }
        vfmig_vfio_data_close(data);
        r = vfmig_vfio_set_state(s->dev, VFMIG_MIG_STOP, NULL);
        if (r < 0)
                die("target STOP", r);
}

/* ---- the stream pumps ---- */

static VfmigStreamConn *side_conn(Side *s, bool server)
{
        VfmigStreamConn *c = NULL;
        g_autofree char *err = NULL;
        int r = vfmig_stream_fd_check(s->fd, NULL, &err);

        if (r < 0)
                die(err, r);
        r = s->mode == MODE_TLS ? vfmig_stream_conn_new_tls(s->fd, server, &s->psk, &c)
                                : vfmig_stream_conn_new_plain(s->fd, &c);
        if (r < 0)
                die("conn", r);
        s->fd = -1;     /* owned by the connection now */
        return c;
}

static void stream_source(Side *s)
{
        g_autoptr(VfmigStreamConn) c = side_conn(s, false);
        g_autoptr(VfmigStreamSender) snd = NULL;
        g_autoptr(JsonObject) prof = json_object_new();
        VfmigStreamHeader h = { .n_devices = 1, .tls = s->mode == MODE_TLS };
        VfmigVfioData *data = NULL;
        int r;

        json_object_set_string_member(prof, "type", "bench-gpu");
        vfmig_stream_header_set_profile(&h, 0, prof);
        h.devices[0].bytes_estimate = s->mem;
        r = vfmig_vfio_set_state(s->dev, VFMIG_MIG_STOP_COPY, &data);
        if (r < 0)
                die("source STOP_COPY", r);
        r = vfmig_stream_sender_new(&h, c, record_size, &snd);
        vfmig_stream_header_clear(&h);
        if (r < 0)
                die("sender", r);
        vfmig_stream_sender_attach(snd, 0, data);
        for (;;) {
                VfmigPumpStatus st;

                r = vfmig_stream_sender_step(snd, &st);
                if (r < 0) {
                        fprintf(stderr, "sender: %s\n", vfmig_stream_sender_error_message(snd));
                        die("sender step", r);
                }
                if (st == VFMIG_PUMP_DONE)
                        break;
                if (st == VFMIG_PUMP_WAIT_IO)
                        wait_fd(vfmig_stream_conn_fd(c), vfmig_stream_conn_events(c));
        }
        s->bytes = vfmig_stream_sender_bytes(snd);
        if (vfmig_stream_conn_cipher(c))
                g_strlcpy(tls_cipher, vfmig_stream_conn_cipher(c), sizeof(tls_cipher));
        vfmig_vfio_data_close(data);
}

static void stream_target(Side *s)
{
        g_autoptr(VfmigStreamConn) c = side_conn(s, true);
        g_autoptr(VfmigStreamReceiver) rcv = NULL;
        VfmigVfioData *data = NULL;
        int r = vfmig_stream_receiver_new(c, &rcv);

        if (r < 0)
                die("receiver", r);
        for (;;) {
                VfmigPumpStatus st;
                unsigned dev;

                r = vfmig_stream_receiver_step(rcv, &st, &dev);
                if (r < 0) {
                        fprintf(stderr, "receiver: %s\n", vfmig_stream_receiver_error_message(rcv));
                        die("receiver step", r);
                }
                if (st == VFMIG_PUMP_HEADER) {
                        r = vfmig_vfio_set_state(s->dev, VFMIG_MIG_RESUMING, &data);
                        if (r < 0)
                                die("target RESUMING", r);
                        vfmig_stream_receiver_attach(rcv, 0, data);
                } else if (st == VFMIG_PUMP_DEVICE_DONE) {
                        vfmig_stream_receiver_attach(rcv, 0, NULL);
                        g_clear_pointer(&data, vfmig_vfio_data_close);
                        r = vfmig_vfio_set_state(s->dev, VFMIG_MIG_STOP, NULL);
                        if (r < 0)
                                die("target STOP", r);
                } else if (st == VFMIG_PUMP_END)
                        vfmig_stream_receiver_reply(rcv, 0, NULL);
                else if (st == VFMIG_PUMP_DONE)
                        break;
                else if (st == VFMIG_PUMP_WAIT_IO)
                        wait_fd(vfmig_stream_conn_fd(c), vfmig_stream_conn_events(c));
        }
        s->bytes = vfmig_stream_receiver_bytes(rcv);
}

static void *target_thread(void *p)
{
        Side *s = p;
        double c0 = thread_cpu_s();

        n_waits = 0;
        if (s->mode == MODE_RAW)
                raw_target(s);
        else
                stream_target(s);
        s->cpu = thread_cpu_s() - c0;
        s->waits = n_waits;
        return NULL;
}

/* ---- memory sampling ---- */

static volatile bool sampling;
static volatile bool moving;            /* a transfer's clock is running */
static long start_anon_kb;              /* RssAnon when it started */
static long peak_anon_kb;

static long rss_anon_kb(void)
{
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long v = -1;

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "RssAnon: %ld kB", &v) == 1)
                        break;
        fclose(f);
        return v;
}

static void *sampler_thread(void *p)
{
        while (sampling) {
                /* Only while bytes move: not the devices' set-up. */
                if (moving) {
                        long v = rss_anon_kb();

                        if (moving && v > peak_anon_kb)
                                peak_anon_kb = v;
                }
                g_usleep(2000);
        }
        return NULL;
}

static double last_cpu[2];      /* CPU seconds of the source and target threads, last transfer */
static unsigned last_waits[2];  /* and their poll() calls */

/* One transfer of a mem-byte state: seconds, with the device memory set up
 * before the clock starts. */
static double transfer(Mode mode, uint64_t mem)
{
        Side src = { .mode = mode, .mem = mem }, dst = { .mode = mode, .mem = mem };
        g_autofree char *ep = NULL, *ticket = NULL;
        pthread_t t;
        uint16_t port;
        int lfd, r;
        double t0, t1, c0;

        src.dev = sim(mem, 7);
        dst.dev = sim(mem, 0);
        r = vfmig_stream_tcp_listen("127.0.0.1", 0, &lfd, &port);
        if (r < 0)
                die("listen", r);
        ep = g_strdup_printf("127.0.0.1:%u", port);
        r = vfmig_stream_tcp_connect(ep, &src.fd);
        if (r < 0)
                die("connect", r);
        do {
                dst.fd = vfmig_stream_tcp_accept(lfd);
                if (dst.fd == -EAGAIN)
                        wait_fd(lfd, POLLIN);
        } while (dst.fd == -EAGAIN);
        if (dst.fd < 0)
                die("accept", dst.fd);
        close(lfd);
        if (mode == MODE_TLS) {
                if (vfmig_ticket_new(&ticket) < 0 || vfmig_psk_derive(ticket, "bench", &src.psk) < 0)
                        die("ticket", EIO);
                dst.psk = src.psk;
        }

        if (sampling) {
                start_anon_kb = rss_anon_kb();
                peak_anon_kb = start_anon_kb;
        }
        moving = true;
        t0 = now_s();
        pthread_create(&t, NULL, target_thread, &dst);
        c0 = thread_cpu_s();
        n_waits = 0;
        if (mode == MODE_RAW)
                raw_source(&src);
        else
                stream_source(&src);
        src.cpu = thread_cpu_s() - c0;
        src.waits = n_waits;
        pthread_join(t, NULL);
        t1 = now_s();
        moving = false;
        last_cpu[0] = src.cpu;
        last_cpu[1] = dst.cpu;
        last_waits[0] = src.waits;
        last_waits[1] = dst.waits;

        if (src.bytes != dst.bytes || src.bytes < mem) {
                fprintf(stderr, "bench-stream: moved %" PRIu64 " of %" PRIu64 " bytes\n", dst.bytes, src.bytes);
                exit(1);
        }
        if (src.fd >= 0)
                close(src.fd);
        if (dst.fd >= 0)
                close(dst.fd);
        vfmig_psk_clear(&src.psk);
        vfmig_psk_clear(&dst.psk);
        vfmig_vfio_close(src.dev);
        vfmig_vfio_close(dst.dev);
        return t1 - t0;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
        qsort(v, n, sizeof(double), cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Single-core AES-128-GCM in TLS record sized chunks, like the TLS mode:
 * MB/s encrypting (decrypt false) or decrypting (true), with the tag. */
static double aes_gcm_mbps(size_t total, bool decrypt)
{
        gnutls_cipher_hd_t h;
        uint8_t key[16] = { 1 }, iv[12] = { 2 }, tag[16];
        gnutls_datum_t k = { key, sizeof(key) }, n = { iv, sizeof(iv) };
        g_autofree uint8_t *buf = g_malloc(MIB + 16);
        double t0, t1;

        memset(buf, 0x5a, MIB);
        if (gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_128_GCM, &k, &n) < 0)
                die("cipher", EIO);
        t0 = now_s();
        for (size_t done = 0; done < total; done += 16384) {
                uint8_t *p = buf + (done % MIB);

                gnutls_cipher_set_iv(h, iv, sizeof(iv));
                if (decrypt)
                        gnutls_cipher_decrypt2(h, p, 16384, p, 16384);
                else
                        gnutls_cipher_encrypt2(h, p, 16384, p, 16384);
                gnutls_cipher_tag(h, tag, sizeof(tag));
        }
        t1 = now_s();
        gnutls_cipher_deinit(h);
        return (double) total / MIB / (t1 - t0);
}

static unsigned cpus_usable(void)
{
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
                return (unsigned) CPU_COUNT(&set);
        return 1;
}

/* The most MB/s a TLS transfer can reach here (see the top of the file),
 * from ms of CPU per GiB: the raw copy's per side, the cipher's alone. */
static double tls_ceiling_mbps(double src_raw, double tgt_raw, double enc, double dec, unsigned cpus)
{
        double src = src_raw + enc, tgt = tgt_raw + dec;
        double per_gib_ms = MAX(MAX(src, tgt), (src + tgt) / cpus);

        return 1024.0 * 1000.0 / per_gib_ms;
}

static long peak_during(Mode mode, uint64_t mem)
{
        pthread_t t;

        sampling = true;
        pthread_create(&t, NULL, sampler_thread, NULL);
        (void) transfer(mode, mem);
        sampling = false;
        pthread_join(t, NULL);
        return peak_anon_kb - start_anon_kb;
}

static const char *const mode_name[] = { "raw", "fd", "tls" };

int main(int argc, char **argv)
{
        unsigned size_mib = 512, runs = 3, rss_gib = 1, modes = 7;
        double v[3][MAX_RUNS] = { { 0 } }, aes[MAX_RUNS], aes_dec[MAX_RUNS], r_fd[MAX_RUNS], r_tls[MAX_RUNS],
               r_bound[MAX_RUNS], ceiling[MAX_RUNS], r_ceiling[MAX_RUNS];
        unsigned cpus = cpus_usable();
        bool reachable = true;
        double cpu[3][2][MAX_RUNS] = { { { 0 } } }, waits[3][2][MAX_RUNS] = { { { 0 } } };
        double med[3] = { 0 }, aes_med, aes_dec_med;
        long base_kb, small_kb, big_kb;

        for (int i = 1; i + 1 < argc; i += 2) {
                if (strcmp(argv[i], "--size-mib") == 0)
                        size_mib = (unsigned) atoi(argv[i + 1]);
                else if (strcmp(argv[i], "--runs") == 0)
                        runs = (unsigned) atoi(argv[i + 1]);
                else if (strcmp(argv[i], "--record-kib") == 0)
                        record_size = (size_t) atoi(argv[i + 1]) * 1024;
                else if (strcmp(argv[i], "--rss-gib") == 0)
                        rss_gib = (unsigned) atoi(argv[i + 1]);
                else if (strcmp(argv[i], "--modes") == 0) {
                        modes = 0;
                        for (unsigned m = 0; m < 3; m++)
                                if (strstr(argv[i + 1], mode_name[m]))
                                        modes |= 1u << m;
                } else
                        size_mib = 0;
        }
        if (size_mib < 1 || runs < 1 || runs > MAX_RUNS || modes == 0) {
                fprintf(stderr, "usage: bench-stream [--size-mib N] [--runs N (1..%d)] [--record-kib N] [--rss-gib N] "
                        "[--modes raw,fd,tls]\n", MAX_RUNS);
                return 2;
        }

        /* Warm up (page cache of the memfds, TCP, GnuTLS) every mode measured. */
        for (unsigned m = 0; m < 3; m++)
                if (modes & (1u << m))
                        (void) transfer((Mode) m, 32 * MIB);

        /* Rounds: each round measures every mode once, in an order that rotates
         * from round to round, so that a change of the machine's load (other
         * processes share these cores) hits all modes alike; the ratios are the
         * medians of the per-round ratios, each of two runs close in time. */
        for (unsigned i = 0; i < runs; i++) {
                for (unsigned k = 0; k < 3; k++) {
                        unsigned m = (i + k) % 3;

                        if (!(modes & (1u << m)))
                                continue;
                        v[m][i] = (double) size_mib / transfer((Mode) m, (uint64_t) size_mib * MIB);
                        for (unsigned side = 0; side < 2; side++) {
                                cpu[m][side][i] = last_cpu[side] * 1000.0 * 1024 / size_mib;
                                waits[m][side][i] = (double) last_waits[side] / size_mib;
                        }
                }
                aes[i] = aes_gcm_mbps(256u * MIB, false);
                aes_dec[i] = aes_gcm_mbps(256u * MIB, true);
                r_fd[i] = v[MODE_FD][i] / v[MODE_RAW][i];
                r_tls[i] = v[MODE_TLS][i] / v[MODE_RAW][i];
                r_bound[i] = v[MODE_TLS][i] / MIN(v[MODE_RAW][i], aes[i]);
                /* ms per GiB = 1024 * 1000 / MB/s (MB here is MiB, as everywhere in this file). */
                ceiling[i] = tls_ceiling_mbps(cpu[MODE_RAW][0][i], cpu[MODE_RAW][1][i], 1024e3 / aes[i],
                                              1024e3 / aes_dec[i], cpus);
                r_ceiling[i] = v[MODE_TLS][i] / ceiling[i];
                if (0.8 * v[MODE_RAW][i] > ceiling[i])
                        reachable = false;
        }
        for (unsigned m = 0; m < 3; m++)
                if (modes & (1u << m))
                        med[m] = median(v[m], runs);
        aes_med = median(aes, runs);
        aes_dec_med = median(aes_dec, runs);

        printf("stream.state_mib %u\n", size_mib);
        printf("stream.runs %u\n", runs);
        for (unsigned m = 0; m < 3; m++)
                if (modes & (1u << m))
                        printf("stream.%s_MBps %.0f\n", mode_name[m], med[m]);
        /* Where the time goes: CPU time of each side's thread per GiB moved
         * (the slower side bounds the throughput). */
        for (unsigned m = 0; m < 3; m++)
                if (modes & (1u << m))
                        printf("stream.%s_cpu_ms_per_GiB source %.0f target %.0f (polls per MiB %.1f %.1f)\n",
                               mode_name[m], median(cpu[m][0], runs), median(cpu[m][1], runs),
                               median(waits[m][0], runs), median(waits[m][1], runs));
        printf("stream.aes128gcm_1core_MBps %.0f\n", aes_med);
        printf("stream.aes128gcm_decrypt_1core_MBps %.0f\n", aes_dec_med);
        printf("stream.cpus %u\n", cpus);
        if ((modes & 3) == 3)
                printf("stream.fd_vs_raw %.2f\n", median(r_fd, runs));
        if ((modes & 5) == 5) {
                printf("stream.tls_vs_raw %.2f\n", median(r_tls, runs));
                printf("stream.tls_vs_bound %.2f\n", median(r_bound, runs));
                printf("stream.tls_ceiling_MBps %.0f\n", median(ceiling, runs));
                printf("stream.tls_vs_ceiling %.2f\n", median(r_ceiling, runs));
                /* 1 when 0.8 x raw lay under the ceiling in every round: only
                 * then can the TLS target be met on this machine at all. */
                printf("stream.tls_target_reachable %d\n", reachable);
        }
        printf("stream.crc32c_hw %d\n", vfmig_crc32c_hw_available());
        printf("stream.tls_cipher %s\n", tls_cipher);

        if (rss_gib == 0)
                return 0;
        base_kb = rss_anon_kb();
        small_kb = peak_during(MODE_TLS, 64 * MIB);
        big_kb = peak_during(MODE_TLS, (uint64_t) rss_gib * 1024 * MIB);
        printf("stream.rss_anon_idle_kB %ld\n", base_kb);
        printf("stream.rss_anon_growth_64MiB_kB %ld\n", small_kb);
        printf("stream.rss_anon_growth_%uGiB_kB %ld\n", rss_gib, big_kb);
        printf("stream.rss_1GiB_vs_64MiB %.2f\n", (double) big_kb / (double) small_kb);
        return 0;
}
