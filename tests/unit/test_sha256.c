/* Unit tests of SHA-256 (api/sha256.c): FIPS 180-4's vectors (empty, "abc", the 448-bit
 * message, a million "a"), and the same digest whatever the pieces an input comes in. */
#include "../../api/sha256.h"
#include "../check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *hex(const uint8_t d[SHA256_SIZE])
{
    static char s[2 * SHA256_SIZE + 1];
    for (int i = 0; i < SHA256_SIZE; i++) {
        snprintf(s + 2 * i, 3, "%02x", d[i]);
    }
    return s;
}

static void test_fips_vectors(void)
{
    uint8_t d[SHA256_SIZE];
    sha256("", 0, d);
    CHECK_EQ_STR(hex(d), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256("abc", 3, d);
    CHECK_EQ_STR(hex(d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256(m, strlen(m), d);
    CHECK_EQ_STR(hex(d), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    size_t n = 1000000;
    char *a = malloc(n);
    CHECK(a != NULL);
    memset(a, 'a', n);
    sha256(a, n, d);
    CHECK_EQ_STR(hex(d), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* Every length 0..200 (each padding case), hashed whole and in pieces of 1..70 bytes. */
static void test_pieces_match_whole(void)
{
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof msg; i++) {
        msg[i] = (uint8_t)(i * 131 + 7);
    }
    for (size_t len = 0; len <= sizeof msg; len++) {
        uint8_t whole[SHA256_SIZE];
        sha256(msg, len, whole);
        for (size_t piece = 1; piece <= 70; piece += 23) {
            struct sha256 c;
            uint8_t d[SHA256_SIZE];
            sha256_init(&c);
            for (size_t off = 0; off < len; off += piece) {
                sha256_update(&c, msg + off, len - off < piece ? len - off : piece);
            }
            sha256_final(&c, d);
            CHECK(memcmp(d, whole, SHA256_SIZE) == 0);
        }
    }
}

/* clang-format off */
static const struct check_case cases[] = {
    {"fips_vectors", test_fips_vectors},
    {"pieces_match_whole", test_pieces_match_whole},
};
/* clang-format on */

CHECK_MAIN("test_sha256", cases)
