/* SHA-256 (FIPS 180-4), for the fingerprint of a keyed request's body (SPEC §8: the same
 * Idempotency-Key with another body is refused) and for the owner of a batch (a hash of its
 * bearer token, so the store never holds a token). Incremental, as a body arrives in pieces. */
#ifndef BATCHD_API_SHA256_H
#define BATCHD_API_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_SIZE 32

struct sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes so far */
    uint8_t block[64];
    size_t fill; /* bytes waiting in block */
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
/* Writes the digest into OUT; C must be initialised again before another use. */
void sha256_final(struct sha256 *c, uint8_t out[SHA256_SIZE]);
/* The digest of LEN bytes at DATA in one call. */
void sha256(const void *data, size_t len, uint8_t out[SHA256_SIZE]);

#endif
