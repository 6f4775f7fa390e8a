/* Batch ids (SPEC §8): "b_" + 26 Crockford base32 characters, a 48-bit millisecond time then
 * 80 random bits, as a ULID. Ids made in the same millisecond by one thread increase (the
 * random part is incremented), so ids sort by creation order. */
#include "store.h"

#include <string.h>
#include <sys/random.h>

static const char id_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static _Thread_local int64_t id_last_ms = -1;
static _Thread_local uint8_t id_last_rand[10];

/* Random bytes are drawn ID_POOL at a time: one getrandom per new millisecond was half a
 * syscall per small batch at 13k batches/s. Workers are exec'd, never forked with a pool. */
#define ID_POOL 320
static _Thread_local uint8_t id_pool[ID_POOL];
static _Thread_local size_t id_pool_left;

static void id_random(uint8_t r[10])
{
    if (id_pool_left < 10) {
        size_t got = 0;
        while (got < ID_POOL) {
            ssize_t n = getrandom(id_pool + got, ID_POOL - got, 0);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
        id_pool_left = got;
    }
    if (id_pool_left < 10) {
        memset(r, 0, 10); /* no entropy at all: ids stay unique by time and count */
        return;
    }
    memcpy(r, id_pool + ID_POOL - id_pool_left, 10);
    memset(id_pool + ID_POOL - id_pool_left, 0, 10); /* used bytes do not linger */
    id_pool_left -= 10;
}

void store_id_make(int64_t now_ms, char out[STORE_ID_SIZE])
{
    if (now_ms < 0) {
        now_ms = 0;
    }
    if (now_ms <= id_last_ms) {
        /* Same (or an earlier) millisecond: keep the time, add one to the random part. */
        now_ms = id_last_ms;
        for (int i = 9; i >= 0; i--) {
            if (++id_last_rand[i] != 0) {
                break;
            }
        }
    } else {
        id_random(id_last_rand);
        id_last_rand[0] &= 0x7f; /* room to count up within one millisecond */
        id_last_ms = now_ms;
    }
    /* The 128 bits as two words: the 48-bit time and the first 2 random bytes, then the
     * other 8 random bytes. */
    uint64_t hi = ((uint64_t)now_ms & 0xffffffffffffull) << 16;
    hi |= (uint64_t)id_last_rand[0] << 8 | id_last_rand[1];
    uint64_t lo = 0;
    for (int i = 2; i < 10; i++) {
        lo = lo << 8 | id_last_rand[i];
    }
    out[0] = 'b';
    out[1] = '_';
    /* 26 base32 digits, most significant first: digit d holds bits 5(25-d) and up (the
     * first only the top 3). */
    for (int d = 0; d < 26; d++) {
        unsigned shift = 5u * (unsigned)(25 - d);
        uint64_t v;
        if (shift >= 64) {
            v = hi >> (shift - 64);
        } else if (shift > 59) {
            v = lo >> shift | hi << (64 - shift);
        } else {
            v = lo >> shift;
        }
        out[2 + d] = id_alphabet[v & 31u];
    }
    out[STORE_ID_LEN] = '\0';
}

int store_id_valid(const char *s)
{
    if (s == NULL || strlen(s) != STORE_ID_LEN || s[0] != 'b' || s[1] != '_') {
        return 0;
    }
    if (s[2] < '0' || s[2] > '7') {
        return 0;
    }
    for (size_t i = 2; i < STORE_ID_LEN; i++) {
        if (memchr(id_alphabet, s[i], sizeof id_alphabet - 1) == NULL) {
            return 0;
        }
    }
    return 1;
}

int64_t store_id_time_ms(const char *id)
{
    if (!store_id_valid(id)) {
        return 0;
    }
    /* The first ten digits: 3 + 9 * 5 = 48 bits of milliseconds, as store_id_make wrote. */
    uint64_t t = 0;
    for (int d = 0; d < 10; d++) {
        const char *p = memchr(id_alphabet, id[2 + d], sizeof id_alphabet - 1);
        t = (t << (d == 0 ? 3 : 5)) | (uint64_t)(p - id_alphabet);
    }
    return (int64_t)t;
}
