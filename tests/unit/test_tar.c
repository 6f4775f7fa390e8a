/* Unit tests of the tar result writer (server/writer.c, WRITER_TAR): each member's ustar
 * header (name, mode, size, type, magic, checksum), its data and zero padding to 512 bytes,
 * errors.ndjson and summary.json last, two zero blocks at the end, and member names taken
 * from uploaded file names without a way out of the folder or a name used twice. */
#include "../../server/writer.h"
#include "../check.h"

#include <stdlib.h>
#include <unistd.h>

struct member {
    char name[101];
    uint64_t size;
    const uint8_t *data;
};

static uint64_t octal(const uint8_t *f, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
        v = v * 8 + (uint64_t)(f[i] - '0');
    }
    return v;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/* Reads the archive in OUT into M (at most MAX members) checking every header on the way.
 * Returns the member count, or -1 after a failed check. */
static int parse_tar(const struct buf *out, struct member *m, int max)
{
    const uint8_t *p = (const uint8_t *)buf_data(out);
    size_t len = buf_len(out), off = 0;
    int n = 0;
    CHECK_EQ_INT(len % 512, 0);
    while (off + 512 <= len && !all_zero(p + off, 512)) {
        const uint8_t *h = p + off;
        unsigned sum = 0;
        for (size_t i = 0; i < 512; i++) {
            sum += (i >= 148 && i < 156) ? ' ' : h[i];
        }
        CHECK_EQ_INT(octal(h + 148, 8), sum);
        CHECK_EQ_INT(h[154], '\0');
        CHECK_EQ_INT(h[155], ' ');
        CHECK_EQ_INT(octal(h + 100, 8), 0644);
        CHECK_EQ_INT(h[156], '0'); /* a regular file */
        CHECK(memcmp(h + 257,
                     "ustar\0"
                     "00",
                     8) == 0);
        CHECK_EQ_INT(h[99], '\0');
        CHECK(octal(h + 136, 12) > 1600000000); /* an mtime of this century */
        if (n == max) {
            return -1;
        }
        memcpy(m[n].name, h, 100);
        m[n].name[100] = '\0';
        m[n].size = octal(h + 124, 12);
        m[n].data = h + 512;
        size_t padded = (size_t)(m[n].size + 511) / 512 * 512;
        if (off + 512 + padded > len) {
            CHECK(!"member runs past the end");
            return -1;
        }
        CHECK(all_zero(h + 512 + m[n].size, padded - m[n].size));
        off += 512 + padded;
        n++;
    }
    CHECK_EQ_INT(len - off, 1024); /* the end: two zero blocks, and nothing after */
    CHECK(all_zero(p + off, len - off));
    return n;
}

static struct job_result ok_text(uint64_t index, const char *text)
{
    struct job_result r = {0};
    r.index = index;
    r.text = text;
    r.text_len = strlen(text);
    r.worker = 0;
    return r;
}

static int member_is(const struct member *m, const char *name, const void *data, size_t len)
{
    return strcmp(m->name, name) == 0 && m->size == len && memcmp(m->data, data, len) == 0;
}

static void test_layout(void)
{
    struct writer w;
    struct buf out;
    writer_init(&w, WRITER_TAR, 0, 0);
    buf_init(&out, 1u << 20);
    CHECK_EQ_INT(writer_begin(&w, &out), 0);
    CHECK_EQ_INT(buf_len(&out), 0);
    struct job_result r = ok_text(0, "4");
    CHECK_EQ_INT(writer_result(&w, &out, &r), 0);
    struct job_result e = {0};
    e.index = 1;
    e.err = -1;
    e.text = "boom";
    e.text_len = 4;
    e.worker = -1;
    CHECK_EQ_INT(writer_result(&w, &out, &e), 0);
    /* Data of exactly one block (no padding), of one byte more, and of none. */
    static uint8_t block[513];
    memset(block, 'b', sizeof block);
    struct result_blob b512 = {"png", block, 512}, b513 = {"jpeg", block, 513};
    struct result_blob empty = {"small.jpeg", block, 0};
    struct job_result r2 = ok_text(2, "{}");
    r2.blobs = &b512;
    r2.nblobs = 1;
    CHECK_EQ_INT(writer_result(&w, &out, &r2), 0);
    struct result_blob two[2] = {b513, empty};
    struct job_result r3 = ok_text(3, "{}");
    r3.blobs = two;
    r3.nblobs = 2;
    CHECK_EQ_INT(writer_result(&w, &out, &r3), 0);
    const char *summary = "{\"jobs\":4}";
    CHECK_EQ_INT(writer_end(&w, &out, summary), 0);

    struct member m[8];
    int n = parse_tar(&out, m, 8);
    CHECK_EQ_INT(n, 6);
    if (n == 6) {
        CHECK(member_is(&m[0], "0.json", "4", 1));
        CHECK(member_is(&m[1], "2.png", block, 512));
        CHECK(member_is(&m[2], "3.jpeg", block, 513));
        CHECK(member_is(&m[3], "3-small.jpeg", block, 0));
        CHECK_EQ_STR(m[4].name, "errors.ndjson");
        CHECK(m[4].size > 0 && memchr(m[4].data, '\n', m[4].size) != NULL);
        CHECK(strncmp((const char *)m[4].data, "{\"index\":1,\"error\":", 19) == 0);
        CHECK(member_is(&m[5], "summary.json", summary, strlen(summary)));
    }
    CHECK_EQ_INT(w.count, 4);
    writer_cleanup(&w);
    buf_cleanup(&out);
}

static const char *const upload_names[] = {
    "../../etc/passwd.png", "dir\\p.png", "p.png", ".hidden.png", "summary.png", "a b?.png", "",
};

static const char *name_of(void *ud, uint64_t i)
{
    (void)ud;
    return i < sizeof upload_names / sizeof upload_names[0] ? upload_names[i] : NULL;
}

static void test_upload_names(void)
{
    struct writer w;
    struct buf out;
    writer_init(&w, WRITER_TAR, 0, 0);
    w.name_of = name_of;
    buf_init(&out, 1u << 20);
    static const uint8_t px[3] = {1, 2, 3};
    struct result_blob png = {"png", px, sizeof px};
    struct result_blob json = {"json", px, sizeof px};
    for (uint64_t i = 0; i < 8; i++) {
        struct job_result r = ok_text(i, "{}");
        r.blobs = i == 4 ? &json : &png; /* "summary" + ".json": a closing member's name */
        r.nblobs = 1;
        CHECK_EQ_INT(writer_result(&w, &out, &r), 0);
    }
    CHECK_EQ_INT(writer_end(&w, &out, "{}"), 0);
    static const char *const want[] = {
        "passwd.png",                 /* no folders: nothing climbs out */
        "p.png",                      /* a Windows path too */
        "p-2.png",                    /* the second "p" gets its job's index */
        "hidden.png",                 /* no leading dot */
        "summary-4.json", "a_b_.png", /* odd characters replaced */
        "6.png",                      /* nothing left of the name: the index */
        "7.png",                      /* no uploaded name */
        "errors.ndjson",  "summary.json",
    };
    struct member m[12];
    int n = parse_tar(&out, m, 12);
    CHECK_EQ_INT(n, 10);
    for (int i = 0; i < n && i < 10; i++) {
        CHECK_EQ_STR(m[i].name, want[i]);
    }
    writer_cleanup(&w);
    buf_cleanup(&out);
}

static char long_name[300];

static const char *long_name_of(void *ud, uint64_t i)
{
    (void)ud;
    (void)i;
    return long_name;
}

static void test_long_names_and_cap(void)
{
    alarm(30); /* this case once looped forever: fail, don't hang */
    struct writer w;
    struct buf out;
    writer_init(&w, WRITER_TAR, 0, 0);
    w.name_of = long_name_of;
    buf_init(&out, 1u << 16);
    /* A member name never fills the 100-byte field: the header keeps its NUL. */
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    struct result_blob blob = {"variant-with-a-long-name.jpeg", (const uint8_t *)"x", 1};
    struct job_result r = ok_text(123456789, "{}");
    r.blobs = &blob;
    r.nblobs = 1;
    CHECK_EQ_INT(writer_result(&w, &out, &r), 0);
    CHECK_EQ_INT(writer_result(&w, &out, &r), 0); /* the same name again: its index added */
    CHECK_EQ_INT(writer_end(&w, &out, "{}"), 0);
    struct member m[4];
    CHECK_EQ_INT(parse_tar(&out, m, 4), 4);
    CHECK(strlen(m[0].name) < 100 && strlen(m[1].name) < 100);
    CHECK(strcmp(m[0].name, m[1].name) != 0);
    CHECK(strstr(m[1].name, "123456789") != NULL);
    writer_cleanup(&w);
    buf_cleanup(&out);

    /* Past the output's cap the writer says so. */
    alarm(0);
    writer_init(&w, WRITER_TAR, 0, 0);
    buf_init(&out, 2048);
    static uint8_t big[4096];
    struct result_blob huge = {"png", big, sizeof big};
    r.blobs = &huge;
    CHECK_EQ_INT(writer_result(&w, &out, &r), -1);
    writer_cleanup(&w);
    buf_cleanup(&out);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"layout", test_layout},
    {"upload_names", test_upload_names},
    {"long_names_and_cap", test_long_names_and_cap},
};
/* clang-format on */

CHECK_MAIN("test_tar", cases)
