/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY UINT32_C(0x82F63B78)

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
        for (unsigned i = 0; i < 256; i++) {
                uint32_t c = i;

                for (unsigned k = 0; k < 8; k++)
                        c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
                table[0][i] = c;
        }
        for (unsigned i = 0; i < 256; i++)
                for (unsigned t = 1; t < 8; t++)
                        table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static inline uint64_t load_le64(const uint8_t *p)
{
        uint64_t v;

        memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
#endif
        return v;
}

uint32_t vfmig_crc32c_sw(uint32_t crc, const void *buf, size_t n)
{
        const uint8_t *p = buf;

        pthread_once(&table_once, table_init);
        crc = ~crc;
        while (n > 0 && ((uintptr_t) p & 7) != 0) {
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
                n--;
        }
        while (n >= 8) {
                uint64_t v = load_le64(p) ^ crc;

                crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^
                      table[5][(v >> 16) & 0xff] ^ table[4][(v >> 24) & 0xff] ^
                      table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
                      table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
                p += 8;
                n -= 8;
        }
        while (n-- > 0)
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        return ~crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t n)
{
        const uint8_t *p = buf;
        uint64_t c = ~crc;

        while (n > 0 && ((uintptr_t) p & 7) != 0) {
                c = _mm_crc32_u8((uint32_t) c, *p++);
                n--;
        }
        while (n >= 8) {
                uint64_t v;

                memcpy(&v, p, sizeof(v));
                c = _mm_crc32_u64(c, v);
                p += 8;
                n -= 8;
        }
        while (n-- > 0)
                c = _mm_crc32_u8((uint32_t) c, *p++);
        return ~(uint32_t) c;
}

int vfmig_crc32c_hw_available(void)
{
        return !!__builtin_cpu_supports("sse4.2");
}

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n)
{
        static int hw = -1;

        if (hw < 0)
                hw = vfmig_crc32c_hw_available();
        return hw ? crc32c_hw(crc, buf, n) : vfmig_crc32c_sw(crc, buf, n);
}
#else
int vfmig_crc32c_hw_available(void)
{
        return 0;
}

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n)
{
        return vfmig_crc32c_sw(crc, buf, n);
}
#endif
