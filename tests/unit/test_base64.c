/* Unit tests of the base64 codec (api/base64.c): the RFC 4648 vectors, round trips of every
 * length 0..300 checked against a bit-by-bit reference encoder, what decoding tolerates
 * (no padding, whitespace, the URL-safe alphabet, a data: prefix) and what it refuses. */
#include "../../api/base64.h"
#include "../check.h"

#include <stdint.h>
#include <stdlib.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The slow, obvious encoder: six bits at a time, then '=' to a multiple of four. */
static void ref_encode(const uint8_t *p, size_t len, char *out)
{
    size_t o = 0;
    for (size_t bit = 0; bit < len * 8; bit += 6) {
        unsigned v = 0;
        for (size_t k = 0; k < 6; k++) {
            size_t b = bit + k;
            unsigned one = b < len * 8 ? (p[b / 8] >> (7 - b % 8)) & 1u : 0u;
            v = v << 1 | one;
        }
        out[o++] = b64_alphabet[v];
    }
    while (o % 4 != 0) {
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* Encodes S and returns the text in a static buffer. */
static const char *encode_str(const char *s)
{
    static char text[64];
    struct buf b;
    buf_init(&b, 1024);
    int rc = base64_encode(&b, (const uint8_t *)s, strlen(s));
    CHECK_EQ_INT(rc, 0);
    snprintf(text, sizeof text, "%.*s", (int)buf_len(&b), buf_len(&b) ? buf_data(&b) : "");
    buf_cleanup(&b);
    return text;
}

/* Decodes S; returns the rc and leaves the bytes as a string in OUT. */
static int decode_str(const char *s, char *out, size_t outlen)
{
    struct buf b;
    buf_init(&b, 1024);
    int rc = base64_decode(&b, s, strlen(s));
    snprintf(out, outlen, "%.*s", (int)buf_len(&b), buf_len(&b) ? buf_data(&b) : "");
    buf_cleanup(&b);
    return rc;
}

static void test_rfc4648_vectors(void)
{
    static const char *const vec[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    char got[64];
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        CHECK_EQ_STR(encode_str(vec[i][0]), vec[i][1]);
        CHECK_EQ_INT(decode_str(vec[i][1], got, sizeof got), 0);
        CHECK_EQ_STR(got, vec[i][0]);
    }
}

static void test_round_trip_every_length(void)
{
    uint8_t data[300];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof data; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[i] = (uint8_t)x;
    }
    data[0] = 0x00;
    data[1] = 0xff; /* both extremes, in every prefix past 2 */
    char want[404];
    for (size_t len = 0; len <= sizeof data; len++) {
        struct buf enc, dec;
        buf_init(&enc, 4096);
        buf_init(&dec, 4096);
        CHECK_EQ_INT(base64_encode(&enc, data, len), 0);
        ref_encode(data, len, want);
        CHECK_EQ_INT(buf_len(&enc), strlen(want));
        CHECK(buf_len(&enc) == strlen(want) && memcmp(buf_data(&enc), want, strlen(want)) == 0);
        CHECK_EQ_INT(base64_decode(&dec, buf_data(&enc), buf_len(&enc)), 0);
        CHECK_EQ_INT(buf_len(&dec), len);
        CHECK(buf_len(&dec) == len && (len == 0 || memcmp(buf_data(&dec), data, len) == 0));
        buf_cleanup(&enc);
        buf_cleanup(&dec);
    }
}

static void test_lenient_forms(void)
{
    char got[64];
    CHECK_EQ_INT(decode_str("Zg", got, sizeof got), 0); /* padding is optional */
    CHECK_EQ_STR(got, "f");
    CHECK_EQ_INT(decode_str("Zm8", got, sizeof got), 0);
    CHECK_EQ_STR(got, "fo");
    CHECK_EQ_INT(decode_str(" Zm9v\r\nYmFy\t", got, sizeof got), 0);
    CHECK_EQ_STR(got, "foobar");
    CHECK_EQ_INT(decode_str("data:text/plain;base64,Zm9vYmFy", got, sizeof got), 0);
    CHECK_EQ_STR(got, "foobar");
    /* The URL-safe alphabet: 0xfb 0xff 0xbf is "+/+/" in one and "-_-_" in the other. */
    CHECK_EQ_INT(decode_str("-_-_", got, sizeof got), 0);
    CHECK_EQ_INT((unsigned char)got[0], 0xfb);
    CHECK_EQ_INT((unsigned char)got[1], 0xff);
    CHECK_EQ_INT((unsigned char)got[2], 0xbf);
    CHECK_EQ_INT(decode_str("+/+/", got, sizeof got), 0);
    CHECK_EQ_INT((unsigned char)got[0], 0xfb);
}

static void test_refusals(void)
{
    char got[64];
    CHECK_EQ_INT(decode_str("Z", got, sizeof got), -1);       /* 6 bits: not a byte */
    CHECK_EQ_INT(decode_str("Zm9vY", got, sizeof got), -1);   /* a lone sixth of a group */
    CHECK_EQ_INT(decode_str("Zh==", got, sizeof got), -1);    /* nonzero leftover bits */
    CHECK_EQ_INT(decode_str("Zg===", got, sizeof got), -1);   /* three '=' */
    CHECK_EQ_INT(decode_str("Zg=a", got, sizeof got), -1);    /* data after padding */
    CHECK_EQ_INT(decode_str("Zm9v!", got, sizeof got), -1);   /* not in either alphabet */
    CHECK_EQ_INT(decode_str("Zm\x80v", got, sizeof got), -1); /* a high byte */
    CHECK_EQ_INT(decode_str("data:no-comma", got, sizeof got), -1);
    /* An embedded NUL is a bad character, not the end of the text. */
    struct buf b;
    buf_init(&b, 64);
    CHECK_EQ_INT(base64_decode(&b, "Zm9v\0Zm9v", 9), -1);
    buf_cleanup(&b);
}

static void test_caps(void)
{
    struct buf b;
    buf_init(&b, 7);
    CHECK_EQ_INT(base64_encode(&b, (const uint8_t *)"foobar", 6), -1); /* 8 bytes > 7 */
    CHECK_EQ_INT(buf_len(&b), 0);
    CHECK_EQ_INT(base64_encode(&b, (const uint8_t *)"foo", 3), 0);
    buf_cleanup(&b);
    buf_init(&b, 5);
    CHECK_EQ_INT(base64_decode(&b, "Zm9vYmFy", 8), -2); /* 6 bytes > 5 */
    buf_cleanup(&b);
}

struct pieces {
    size_t count, total, largest;
    int fail_at; /* 1-based piece to fail with 7, or 0 */
};

static int count_piece(void *ud, const uint8_t *p, size_t n)
{
    struct pieces *pc = ud;
    (void)p;
    pc->count++;
    pc->total += n;
    pc->largest = n > pc->largest ? n : pc->largest;
    return pc->fail_at != 0 && (size_t)pc->fail_at == pc->count ? 7 : 0;
}

static void test_decode_each_pieces(void)
{
    /* 10,000 bytes come in pieces of at most 3 KiB: 3072 + 3072 + 3072 + 784. */
    size_t len = 10000;
    uint8_t *data = calloc(len, 1);
    struct buf enc;
    buf_init(&enc, 1u << 20);
    CHECK(data != NULL);
    CHECK_EQ_INT(base64_encode(&enc, data, len), 0);
    struct pieces pc = {0, 0, 0, 0};
    CHECK_EQ_INT(base64_decode_each(buf_data(&enc), buf_len(&enc), count_piece, &pc), 0);
    CHECK_EQ_INT(pc.count, 4);
    CHECK_EQ_INT(pc.total, len);
    CHECK_EQ_INT(pc.largest, 3072);
    /* The first nonzero return of EMIT stops the decode and is returned. */
    struct pieces stop = {0, 0, 0, 2};
    CHECK_EQ_INT(base64_decode_each(buf_data(&enc), buf_len(&enc), count_piece, &stop), 7);
    CHECK_EQ_INT(stop.count, 2);
    buf_cleanup(&enc);
    free(data);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"rfc4648_vectors", test_rfc4648_vectors},
    {"round_trip_every_length", test_round_trip_every_length},
    {"lenient_forms", test_lenient_forms},
    {"refusals", test_refusals},
    {"caps", test_caps},
    {"decode_each_pieces", test_decode_each_pieces},
};
/* clang-format on */

CHECK_MAIN("test_base64", cases)
