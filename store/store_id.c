/* Batch ids (SPEC §8): "b_" + 26 Crockford base32 characters, a 48-bit millisecond time then
 * 80 random bits, as a ULID. Ids made in the same millisecond by one thread increase (the
 * random part is incremented), so ids sort by creation order. */
#include "store.h"

#include <string.h>
#include <sys/random.h>

static const char id_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static _Thread_local int64_t id_last_ms = -1;
static _Thread_local uint8_t id_last_rand[10];

static void id_random(uint8_t r[10])
{
    size_t got = 0;
    while (got < 10) {
        ssize_t n = getrandom(r + got, 10 - got, 0);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
}

void store_id_make(int64_t now_ms, char out[STORE_ID_SIZE])
{
    uint8_t b[16];
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
    uint64_t t = (uint64_t)now_ms & 0xffffffffffffull;
    for (int i = 0; i < 6; i++) {
        b[i] = (uint8_t)(t >> (40 - 8 * i));
    }
    memcpy(b + 6, id_last_rand, 10);
    out[0] = 'b';
    out[1] = '_';
    /* 128 bits as 26 base32 digits: the first digit carries the top 3 bits. */
    for (int d = 0; d < 26; d++) {
        int bit = d == 0 ? 0 : 3 + (d - 1) * 5; /* first bit of this digit, MSB first */
        int width = d == 0 ? 3 : 5;
        unsigned v = 0;
        for (int k = 0; k < width; k++) {
            int pos = bit + k;
            v = (v << 1) | ((b[pos / 8] >> (7 - pos % 8)) & 1u);
        }
        out[2 + d] = id_alphabet[v];
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
