/* Unit test of server/auth: token file parsing, bearer checks, open endpoints, CORS
 * origin matching. */
#include "../check.h"

#include "api/errors.h"
#include "server/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char tmpl[] = "/tmp/batchd-auth-XXXXXX";

static const char *write_file(const char *text)
{
    FILE *f = NULL;
    int fd = mkstemp(tmpl);

    if (fd < 0) {
        return NULL;
    }
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return tmpl;
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
    auth_destroy(a);
    unlink(path);

    /* No token file: everything is open. */
    a = auth_create(NULL, NULL, err, sizeof(err));
    CHECK_EQ_INT(auth_required(a, "POST", "/v1/batches"), 0);
    CHECK_EQ_INT(auth_check(a, NULL), 0);
    auth_destroy(a);

    /* A file without a token, or no file at all, refuses to start. */
    snprintf(tmpl, sizeof(tmpl), "/tmp/batchd-auth-XXXXXX");
    path = write_file(" \n\n");
    CHECK(auth_create(path, NULL, err, sizeof(err)) == NULL);
    unlink(path);
    CHECK(auth_create("/nonexistent/token", NULL, err, sizeof(err)) == NULL);
    auth_destroy(NULL);
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
    {"cors", test_cors},
};
/* clang-format on */

CHECK_MAIN("test_auth", cases)
