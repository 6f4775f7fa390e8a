/* The multipart parser (server/multipart.c): real bodies fed whole, split at every position,
 * split into single bytes and into random pieces must all give the same parts; malformed
 * bodies give errors, never a crash. */
#include "../../server/multipart.h"
#include "../check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXP 16

/* What the parser reported: each part's name, filename and bytes, in order. */
struct got {
    int nparts;
    char name[MAXP][64], filename[MAXP][64];
    int has_filename[MAXP];
    char data[MAXP][512];
    size_t len[MAXP];
    int open;     /* between begin and end */
    int misorder; /* an event out of order */
};

static int on_event(void *ud, enum multipart_event ev, const struct multipart_part *part,
                    const char *data, size_t n)
{
    struct got *g = ud;
    if (ev == MULTIPART_PART_BEGIN) {
        if (g->open || g->nparts == MAXP) {
            g->misorder = 1;
            return 0;
        }
        int i = g->nparts++;
        snprintf(g->name[i], sizeof g->name[i], "%s", part->name ? part->name : "");
        g->has_filename[i] = part->filename != NULL;
        snprintf(g->filename[i], sizeof g->filename[i], "%s", part->filename ? part->filename : "");
        g->open = 1;
    } else if (ev == MULTIPART_PART_END) {
        if (!g->open) {
            g->misorder = 1;
        }
        g->open = 0;
    } else {
        int i = g->nparts - 1;
        if (!g->open || n == 0 || g->len[i] + n > sizeof g->data[i]) {
            g->misorder = 1;
            return 0;
        }
        memcpy(g->data[i] + g->len[i], data, n);
        g->len[i] += n;
    }
    return 0;
}

/* Feeds BODY in the pieces given by CUTS (ascending positions, NCUTS of them). */
static int parse_cut(const char *ct, const char *body, size_t len, const size_t *cuts, size_t ncuts,
                     struct got *g)
{
    memset(g, 0, sizeof *g);
    struct multipart *m = multipart_create(ct, on_event, g);
    if (m == NULL) {
        return -99;
    }
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && rc == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rc = multipart_feed(m, body + at, end - at);
        at = end;
    }
    if (rc == 0) {
        rc = multipart_finish(m);
    }
    multipart_destroy(m);
    return rc;
}

static int same(const struct got *a, const struct got *b)
{
    if (a->nparts != b->nparts || a->misorder || b->misorder || a->open || b->open) {
        return 0;
    }
    for (int i = 0; i < a->nparts; i++) {
        if (strcmp(a->name[i], b->name[i]) != 0 || strcmp(a->filename[i], b->filename[i]) != 0 ||
            a->has_filename[i] != b->has_filename[i] || a->len[i] != b->len[i] ||
            memcmp(a->data[i], b->data[i], a->len[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

static const char CT[] = "multipart/form-data; boundary=XyZ-b0und";

/* Several files, an empty file part, CRLF and boundary-like bytes inside data. */
static const char BODY[] = "preamble to ignore\r\n"
                           "--XyZ-b0und\r\n"
                           "Content-Disposition: form-data; name=\"batch\"\r\n"
                           "Content-Type: application/json\r\n"
                           "\r\n"
                           "{\"op\":\"img.info\"}\r\n"
                           "--XyZ-b0und\r\n"
                           "Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                           "Content-Type: image/png\r\n"
                           "\r\n"
                           "\x89PNG\r\n\x1a\n\r\n--XyZ-b0un\r\n--XyZ\r\r\n-\r\n--\r\n"
                           "--XyZ-b0und\r\n"
                           "Content-Disposition: form-data; name=\"file\"; filename=\"empty\"\r\n"
                           "\r\n"
                           "\r\n"
                           "--XyZ-b0und\r\n"
                           "content-disposition: form-data; name=file; filename=\"q\\\"d.jpg\"\r\n"
                           "\r\n"
                           "\r\r\r\n\r\n-\r\n--XyZ-b0unX-\r\n"
                           "--XyZ-b0und   \r\n"
                           "Content-Disposition: form-data; name=\"file\"\r\n"
                           "\r\n"
                           "last"
                           "\r\n--XyZ-b0und--\r\n"
                           "epilogue --XyZ-b0und\r\n";

static void test_whole(struct got *ref)
{
    CHECK_EQ_INT(parse_cut(CT, BODY, sizeof BODY - 1, NULL, 0, ref), 0);
    CHECK_EQ_INT(ref->nparts, 5);
    CHECK(!ref->misorder);
    CHECK_EQ_STR(ref->name[0], "batch");
    CHECK_EQ_INT(ref->len[0], 17);
    CHECK_EQ_STR(ref->name[1], "file");
    CHECK_EQ_STR(ref->filename[1], "a.png");
    const char d1[] = "\x89PNG\r\n\x1a\n\r\n--XyZ-b0un\r\n--XyZ\r\r\n-\r\n--";
    CHECK_EQ_INT(ref->len[1], sizeof d1 - 1);
    CHECK(memcmp(ref->data[1], d1, sizeof d1 - 1) == 0);
    CHECK_EQ_STR(ref->filename[2], "empty");
    CHECK_EQ_INT(ref->len[2], 0);
    CHECK_EQ_STR(ref->name[3], "file");
    CHECK_EQ_STR(ref->filename[3], "q\"d.jpg");
    const char d3[] = "\r\r\r\n\r\n-\r\n--XyZ-b0unX-";
    CHECK_EQ_INT(ref->len[3], sizeof d3 - 1);
    CHECK(memcmp(ref->data[3], d3, sizeof d3 - 1) == 0);
    CHECK(!ref->has_filename[4]);
    CHECK_EQ_INT(ref->len[4], 4);
}

static void test_every_split(const struct got *ref)
{
    size_t len = sizeof BODY - 1;
    int bad = 0;
    struct got g;
    /* One cut at every position, and two cuts at every pair of positions. */
    for (size_t a = 0; a <= len; a++) {
        size_t c1[1] = {a};
        if (parse_cut(CT, BODY, len, c1, 1, &g) != 0 || !same(ref, &g)) {
            bad++;
        }
        for (size_t b = a; b <= len; b += 3) {
            size_t c2[2] = {a, b};
            if (parse_cut(CT, BODY, len, c2, 2, &g) != 0 || !same(ref, &g)) {
                bad++;
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* One byte at a time. */
    size_t *cuts = malloc(len * sizeof *cuts);
    for (size_t i = 0; i < len; i++) {
        cuts[i] = i;
    }
    CHECK_EQ_INT(parse_cut(CT, BODY, len, cuts, len, &g), 0);
    CHECK(same(ref, &g));
    /* Random pieces. */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    bad = 0;
    for (int t = 0; t < 2000; t++) {
        size_t n = 0, at = 0;
        for (;;) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at += 1 + x % 9;
            if (at >= len) {
                break;
            }
            cuts[n++] = at;
        }
        if (parse_cut(CT, BODY, len, cuts, n, &g) != 0 || !same(ref, &g)) {
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    free(cuts);
}

static void test_boundary(void)
{
    char b[80];
    CHECK_EQ_INT(multipart_boundary("multipart/form-data; boundary=abc", b, sizeof b), 3);
    CHECK_EQ_STR(b, "abc");
    CHECK_EQ_INT(
        multipart_boundary("multipart/form-data; BOUNDARY=\"a b;c\"; charset=utf-8", b, sizeof b),
        5);
    CHECK_EQ_STR(b, "a b;c");
    CHECK_EQ_INT(multipart_boundary("multipart/form-data;charset=x;boundary=zz ; x=1", b, sizeof b),
                 2);
    CHECK_EQ_STR(b, "zz");
    CHECK_EQ_INT(multipart_boundary("multipart/form-data", b, sizeof b), -1);
    CHECK_EQ_INT(multipart_boundary("multipart/form-data; boundary=", b, sizeof b), -1);
    CHECK_EQ_INT(multipart_boundary("multipart/form-data; boundary=\"abc", b, sizeof b), -1);
    char longb[200];
    snprintf(longb, sizeof longb, "multipart/form-data; boundary=%071d", 0);
    CHECK_EQ_INT(multipart_boundary(longb, b, sizeof b), -1);
    snprintf(longb, sizeof longb, "multipart/form-data; boundary=%070d", 0);
    CHECK_EQ_INT(multipart_boundary(longb, b, sizeof b), 70);
}

static int parse_one(const char *ct, const char *body)
{
    struct got g;
    return parse_cut(ct, body, strlen(body), NULL, 0, &g);
}

static void test_malformed(void)
{
    const char *ok = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--b--";
    CHECK_EQ_INT(parse_one("multipart/form-data; boundary=b", ok), 0);
    CHECK(parse_one("multipart/form-data", ok) < 0);
    /* no closing boundary */
    CHECK(parse_one("multipart/form-data; boundary=b",
                    "--b\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--b") < 0);
    CHECK(parse_one("multipart/form-data; boundary=b",
                    "--b\r\nContent-Disposition: form-data; name=x\r\n\r\nvvv") < 0);
    CHECK(parse_one("multipart/form-data; boundary=b", "") < 0);
    /* no Content-Disposition, not form-data, garbage after a boundary, no colon */
    CHECK(parse_one("multipart/form-data; boundary=b", "--b\r\nX: y\r\n\r\nv\r\n--b--") < 0);
    CHECK(parse_one("multipart/form-data; boundary=b",
                    "--b\r\nContent-Disposition: attachment\r\n\r\nv\r\n--b--") < 0);
    CHECK(parse_one("multipart/form-data; boundary=b",
                    "--bX\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--") < 0);
    CHECK(parse_one("multipart/form-data; boundary=b", "--b\r\nnocolon\r\n\r\nv\r\n--b--") < 0);
    CHECK(parse_one("multipart/form-data; boundary=b",
                    "--b\r\nContent-Disposition: form-data; name=\"x\r\n\r\nv\r\n--b--") < 0);
    /* headers over the cap */
    size_t n = MULTIPART_MAX_HEADERS + 100;
    char *big = malloc(n + 64);
    memcpy(big, "--b\r\nX: ", 8);
    memset(big + 8, 'a', n);
    big[8 + n] = '\0';
    CHECK(parse_one("multipart/form-data; boundary=b", big) < 0);
    free(big);
    /* a callback's code stops the parser and comes back */
    struct got g;
    memset(&g, 0, sizeof g);
    struct multipart *m = multipart_create("multipart/form-data; boundary=b", on_event, &g);
    CHECK_EQ_INT(multipart_feed(m, ok, strlen(ok)), 0);
    CHECK_EQ_INT(multipart_finish(m), 0);
    CHECK_EQ_INT(multipart_feed(m, "more", 4), 0); /* the epilogue */
    multipart_destroy(m);
    multipart_destroy(NULL);
}

int main(void)
{
    static struct got ref;
    test_whole(&ref);
    test_every_split(&ref);
    test_boundary();
    test_malformed();
    return check_report("multipart");
}
