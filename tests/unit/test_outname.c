/* Output names of image jobs (api/outname.c): stems keep a path input's folders and only
 * safe characters, and claims in one batch never give two jobs one file. */
#include "api/outname.h"
#include "tests/check.h"

#include <stdlib.h>
#include <string.h>

static void stem_is(const char *path, const char *name, uint64_t index, const char *want)
{
    char out[OUTNAME_MAX + 1];
    outname_stem(path, name, index, out, sizeof out);
    CHECK_EQ_STR(out, want);
    CHECK(outname_stem_ok(out));
}

static void test_stems(void)
{
    stem_is("a.png", NULL, 0, "a");
    stem_is("sub/a.png", NULL, 0, "sub/a");
    stem_is("./sub//deep/a.tar.gz", NULL, 0, "sub/deep/a.tar");
    stem_is("../x/./a.jpg", NULL, 0, "x/a");
    stem_is(".hidden", NULL, 0, "_hidden");
    stem_is("sp ace/é.png", NULL, 0, "sp_ace/__");
    stem_is("noext", NULL, 0, "noext");
    stem_is(NULL, "dir/p.jpg", 3, "p");
    stem_is(NULL, "..", 3, "3");
    stem_is(NULL, NULL, 42, "42");
    stem_is("", NULL, 7, "7");
    /* Too deep to keep the folders: the base name alone; a long name is cut. */
    char deep[2000];
    size_t len = 0;
    for (int i = 0; i < 30; i++) {
        len += (size_t)snprintf(deep + len, sizeof deep - len, "folder-name/");
    }
    snprintf(deep + len, sizeof deep - len, "a.png");
    stem_is(deep, NULL, 0, "a");
    char longname[300];
    memset(longname, 'x', 250);
    snprintf(longname + 250, sizeof longname - 250, ".png");
    char out[OUTNAME_MAX + 1];
    outname_stem(longname, NULL, 0, out, sizeof out);
    CHECK_EQ_INT(strlen(out), OUTNAME_MAX_PART);
    CHECK(outname_stem_ok(out));

    const char *bad[] = {"", "/abs", "a//b", "a/", ".x", "a/.x", "a/../b", "a b", "a\\b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!outname_stem_ok(bad[i]));
    }
}

static char *claim(struct outname_set *s, const char *params, const char *input, const char *upload,
                   uint64_t index)
{
    json_t *p = json_loads(params, 0, NULL);
    json_t *in = input != NULL ? json_loads(input, 0, NULL) : NULL;
    char *out = (char *)"unset";
    CHECK_EQ_INT(outname_claim(s, NULL, p, in, upload, index, &out), 0);
    json_decref(p);
    json_decref(in);
    return out;
}

static void claim_is(struct outname_set *s, const char *params, const char *input,
                     const char *upload, uint64_t index, const char *want)
{
    char *got = claim(s, params, input, upload, index);
    if (want == NULL) {
        CHECK(got == NULL);
    } else {
        CHECK_EQ_STR(got, want);
    }
    free(got);
}

static void test_claims(void)
{
    const char *path = "{\"output\": \"path\"}";
    const char *vars =
        "{\"output\": \"path\", \"variants\": [{\"name\": \"t\"}, {\"name\": \"q\"}]}";
    struct outname_set *s = outname_set_create();
    CHECK(s != NULL);
    claim_is(s, "{}", "{\"path\": \"a.png\"}", NULL, 0, NULL); /* inline: no files */
    claim_is(s, path, "{\"path\": \"a.png\"}", NULL, 0, "a");
    claim_is(s, path, "{\"path\": \"sub/a.png\"}", NULL, 1, "sub/a");
    claim_is(s, path, "{\"path\": \"a.jpg\"}", NULL, 2, "a-1");
    claim_is(s, path, "{\"path\": \"a.png\"}", NULL, 3, "a-2");
    claim_is(s, path, "{\"path\": \"a-1.png\"}", NULL, 4, "a-1-1");
    claim_is(s, path, NULL, "p.jpg", 5, "p");
    claim_is(s, path, NULL, "other/p.jpg", 6, "p-1");
    claim_is(s, path, "{\"data\": \"AAAA\"}", NULL, 7, "7");
    claim_is(s, path, "{\"path\": \"7.png\"}", NULL, 8, "7-1");
    /* Variants: c writes c-t and c-q, so an input c-t must move; c again goes on from the
     * last number claimed for c. */
    claim_is(s, vars, "{\"path\": \"c.png\"}", NULL, 9, "c");
    claim_is(s, path, "{\"path\": \"c-t.png\"}", NULL, 10, "c-t-1");
    claim_is(s, path, "{\"path\": \"c.png\"}", NULL, 11, "c-1");
    claim_is(s, vars, "{\"path\": \"c.png\"}", NULL, 12, "c-2");
    outname_set_destroy(s);
    outname_set_destroy(NULL);

    /* Many uploads of one name: linear, and each its own number. */
    s = outname_set_create();
    json_t *p = json_loads(path, 0, NULL);
    for (int i = 0; i < 20000; i++) {
        char *out = NULL;
        CHECK_EQ_INT(outname_claim(s, p, NULL, NULL, "IMG.jpg", (uint64_t)i, &out), 0);
        if (i == 0) {
            CHECK_EQ_STR(out, "IMG");
        } else if (i == 19999) {
            CHECK_EQ_STR(out, "IMG-19999");
        }
        free(out);
    }
    json_decref(p);
    outname_set_destroy(s);
}

int main(void)
{
    test_stems();
    test_claims();
    return check_report("test_outname");
}
