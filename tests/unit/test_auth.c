/* Unit test of server/auth: token file parsing, bearer checks, open endpoints, CORS
 * origin matching. */
#include "../check.h"

#include "api/errors.h"
#include "server/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpl[] = "/tmp/batchd-auth-XXXXXX";

/* Writes LEN bytes of TEXT (any bytes, NULs included) to a new temporary file. */
static const char *write_bytes(const char *text, size_t len)
{
    FILE *f = NULL;
    int fd = -1;

    snprintf(tmpl, sizeof(tmpl), "/tmp/batchd-auth-XXXXXX");
    fd = mkstemp(tmpl);
    if (fd < 0) {
        return NULL;
    }
    f = fdopen(fd, "w");
    fwrite(text, 1, len, f);
    fclose(f);
    return tmpl;
}

static const char *write_file(const char *text)
{
    return write_bytes(text, strlen(text));
}

static void test_tokens(void)
{
    char err[256] = "";
    const char *path = write_file("  s3cret-one \n\n second\t\r\n");
    struct auth *a = auth_create(path, NULL, err, sizeof(err));

    CHECK(a != NULL);
    CHECK_EQ_INT(auth_check(a, "Bearer s3cret-one"), 0);
    CHECK_EQ_INT(auth_check(a, "bearer   second"), 0);
    CHECK_EQ_INT(auth_check(a, "Bearer second "), 0);
    CHECK_EQ_INT(auth_check(a, "Bearer s3cret-on"), -BATCHD_E_UNAUTHORIZED);
    CHECK_EQ_INT(auth_check(a, "Bearer s3cret-one1"), -BATCHD_E_UNAUTHORIZED);
    CHECK_EQ_INT(auth_check(a, "Bearer "), -BATCHD_E_UNAUTHORIZED);
    CHECK_EQ_INT(auth_check(a, "Basic s3cret-one"), -BATCHD_E_UNAUTHORIZED);
    CHECK_EQ_INT(auth_check(a, "Bearers3cret-one"), -BATCHD_E_UNAUTHORIZED);
    CHECK_EQ_INT(auth_check(a, NULL), -BATCHD_E_UNAUTHORIZED);
    CHECK_EQ_INT(auth_required(a, "POST", "/v1/batches"), 1);
    CHECK_EQ_INT(auth_required(a, "GET", "/metrics"), 1);
    CHECK_EQ_INT(auth_required(a, "GET", "/healthz"), 0);
    CHECK_EQ_INT(auth_required(a, "GET", "/readyz"), 0);
    CHECK_EQ_INT(auth_required(a, "OPTIONS", "/v1/batches"), 0);
    CHECK_EQ_INT(auth_required(a, "GET", "/"), 0);
    CHECK_EQ_INT(auth_required(a, "GET", "/web/"), 0);
    CHECK_EQ_INT(auth_required(a, "GET", "/web/batchd.js"), 0);
    CHECK_EQ_INT(auth_required(a, "GET", "/webx"), 1);
    auth_destroy(a);
    unlink(path);

    /* No token file: everything is open. */
    a = auth_create(NULL, NULL, err, sizeof(err));
    CHECK_EQ_INT(auth_required(a, "POST", "/v1/batches"), 0);
    CHECK_EQ_INT(auth_check(a, NULL), 0);
    auth_destroy(a);

    /* A file without a token, or no file at all, refuses to start. */
    path = write_file(" \n\n");
    CHECK(auth_create(path, NULL, err, sizeof(err)) == NULL);
    unlink(path);
    CHECK(auth_create("/nonexistent/token", NULL, err, sizeof(err)) == NULL);
    auth_destroy(NULL);
}

/* A NUL (or another control byte) inside a token line: refused at start with a message
 * that says so, never stored as a token whose C string is shorter than its length. */
static void test_token_control_bytes(void)
{
    static const char nul_mid[] = "abc\0def\nsecond\n";
    static const char nul_end[] = "only-token\0\n";
    static const char esc[] = "tok\x1b[0m\n";
    char err[256] = "";
    const char *path = write_bytes(nul_mid, sizeof(nul_mid) - 1);
    struct auth *a = auth_create(path, NULL, err, sizeof(err));

    CHECK(a == NULL);
    CHECK(strstr(err, "line 1") != NULL);
    CHECK(strstr(err, "0x00") != NULL);
    if (a != NULL) {
        /* The defect: this read past the stored token. */
        CHECK_EQ_INT(auth_check(a, "Bearer abc"), -BATCHD_E_UNAUTHORIZED);
        auth_destroy(a);
    }
    unlink(path);

    path = write_bytes(nul_end, sizeof(nul_end) - 1);
    a = auth_create(path, NULL, err, sizeof(err));
    CHECK(a == NULL);
    if (a != NULL) {
        CHECK_EQ_INT(auth_check(a, "Bearer only-token"), -BATCHD_E_UNAUTHORIZED);
        auth_destroy(a);
    }
    unlink(path);

    path = write_bytes(esc, sizeof(esc) - 1);
    a = auth_create(path, NULL, err, sizeof(err));
    CHECK(a == NULL);
    CHECK(strstr(err, "0x1b") != NULL);
    auth_destroy(a);
    unlink(path);

    /* A tab inside a token is a byte a header can carry: kept, compared exactly. */
    path = write_file("a\tb\n");
    a = auth_create(path, NULL, err, sizeof(err));
    CHECK(a != NULL);
    CHECK_EQ_INT(auth_check(a, "Bearer a\tb"), 0);
    CHECK_EQ_INT(auth_check(a, "Bearer a b"), -BATCHD_E_UNAUTHORIZED);
    auth_destroy(a);
    unlink(path);
}

/* LF, CRLF and lone-CR line ends all separate tokens, mixed in one file too. */
static void test_token_line_ends(void)
{
    static const char *const files[] = {
        "alpha\rbeta\rgamma",
        "alpha\r\nbeta\r\ngamma\r\n",
        "alpha\nbeta\ngamma\n",
        "\r\r  alpha \r\n\n\tbeta\r\rgamma\n\r",
    };
    char err[256] = "";

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        const char *path = write_file(files[i]);
        struct auth *a = auth_create(path, NULL, err, sizeof(err));

        CHECK(a != NULL);
        CHECK_EQ_INT(auth_check(a, "Bearer alpha"), 0);
        CHECK_EQ_INT(auth_check(a, "Bearer beta"), 0);
        CHECK_EQ_INT(auth_check(a, "Bearer gamma"), 0);
        CHECK_EQ_INT(auth_check(a, "Bearer alpha\rbeta"), -BATCHD_E_UNAUTHORIZED);
        CHECK_EQ_INT(auth_check(a, "Bearer alph"), -BATCHD_E_UNAUTHORIZED);
        auth_destroy(a);
        unlink(path);
    }
}

static void test_cors(void)
{
    char err[256] = "";
    struct auth *a = auth_create(NULL, "https://a.example, https://b.example", err, sizeof(err));

    CHECK(a != NULL);
    CHECK_EQ_STR(auth_cors_allow_origin(a, "https://b.example"), "https://b.example");
    CHECK(auth_cors_allow_origin(a, "https://c.example") == NULL);
    CHECK(auth_cors_allow_origin(a, "https://a.example.evil") == NULL);
    CHECK(auth_cors_allow_origin(a, NULL) == NULL);
    auth_destroy(a);

    a = auth_create(NULL, "*", err, sizeof(err));
    CHECK_EQ_STR(auth_cors_allow_origin(a, "https://any.example"), "*");
    auth_destroy(a);

    a = auth_create(NULL, "", err, sizeof(err));
    CHECK(auth_cors_allow_origin(a, "https://any.example") == NULL);
    auth_destroy(a);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"tokens", test_tokens},
    {"token_control_bytes", test_token_control_bytes},
    {"token_line_ends", test_token_line_ends},
    {"cors", test_cors},
};
/* clang-format on */

CHECK_MAIN("test_auth", cases)
