/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * crc32c.h — CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of iSCSI (RFC 3720) and of the vfmig stream records.
 *
 * vfmig_crc32c(0, buf, n) is the CRC of buf; feeding the result back as crc
 * continues it over more bytes: crc32c(crc32c(0, a), b) == crc32c(0, a||b).
 * The CPU's CRC32 instruction (SSE4.2) is used when it has it, in three
 * interleaved lanes on long buffers; with AVX-512 carry-less multiply
 * (VPCLMULQDQ) long buffers are folded 256 bytes at a time instead.  Else
 * slicing-by-8 tables.  Thread-safe.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n);

/* The portable table code only (for tests and the benchmark). */
uint32_t vfmig_crc32c_sw(uint32_t crc, const void *buf, size_t n);

/* What vfmig_crc32c() uses: 0 tables, 1 the CRC32 instruction, 2 also
 * carry-less multiply folding. */
int vfmig_crc32c_hw_available(void);

/* The CRC with at most the given method (for tests and the benchmark): the
 * same value whatever the method. */
uint32_t vfmig_crc32c_level(int level, uint32_t crc, const void *buf, size_t n);
