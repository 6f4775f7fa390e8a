/* Unit tests of the configuration (server/config.c): defaults, environment twins and flags
 * (flags win), both flag spellings, size and duration suffixes, and the values it refuses
 * with a message naming the flag. */
#include "../../server/config.h"
#include "../check.h"

#include <stdlib.h>

extern char **environ;

/* Forgets every BATCHD_* variable a developer's shell might set, so defaults are defaults. */
static void clear_env(void)
{
    for (;;) {
        char name[128] = "";
        for (char **e = environ; *e != NULL; e++) {
            const char *eq = strchr(*e, '=');
            if (strncmp(*e, "BATCHD_", 7) == 0 && eq != NULL && (size_t)(eq - *e) < sizeof name) {
                memcpy(name, *e, (size_t)(eq - *e));
                name[eq - *e] = '\0';
                break;
            }
        }
        if (name[0] == '\0') {
            return;
        }
        unsetenv(name);
    }
}

/* config_load over a NULL-terminated list of arguments (without argv[0]); the error text,
 * if any, lands in ERRBUF. */
static int load(struct config *cfg, char *errbuf, size_t errlen, const char *const *args)
{
    char *argv[32] = {"batchd"};
    int argc = 1;
    while (args != NULL && args[argc - 1] != NULL && argc < 31) {
        argv[argc] = (char *)args[argc - 1];
        argc++;
    }
    argv[argc] = NULL;
    FILE *out = tmpfile();
    FILE *err = tmpfile();
    int rc = config_load(cfg, argc, argv, out, err);
    rewind(err);
    size_t n = fread(errbuf, 1, errlen - 1, err);
    errbuf[n] = '\0';
    fclose(out);
    fclose(err);
    return rc;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void)
{
    clear_env();
    struct config cfg;
    char err[512];
    CHECK_EQ_INT(load(&cfg, err, sizeof err, NULL), 0);
    CHECK_EQ_STR(cfg.listen, "0.0.0.0:8080");
    CHECK_EQ_STR(cfg.workers_arg, "auto");
    CHECK_EQ_INT(cfg.workers, config_cpus_available());
    CHECK(cfg.workers >= 1);
    CHECK_EQ_INT(cfg.max_body_bytes, 1024ull * 1024 * 1024);
    CHECK_EQ_INT(cfg.max_jobs, 10000000);
    CHECK_EQ_INT(cfg.job_timeout_ms, 60000);
    CHECK_EQ_INT(cfg.grace_period_ms, 30000);
    CHECK_EQ_INT(cfg.worker_memory_bytes, 4ull * 1024 * 1024 * 1024);
    CHECK_EQ_STR(cfg.log_format, "logfmt");
    CHECK_EQ_STR(cfg.log_level, "info");
    CHECK_EQ_STR(cfg.data_dir, "");
    CHECK_EQ_STR(cfg.output_dir, "");
    CHECK_EQ_STR(cfg.state_dir, "./batchd-state");
    CHECK_EQ_INT(cfg.result_ttl_ms, 24ull * 3600 * 1000);
    CHECK_EQ_INT(cfg.max_stored_bytes, 10ull * 1024 * 1024 * 1024);
    CHECK_EQ_STR(err, "");
}

/* The state dir is refused when it is, holds or is inside the data or the output dir
 * (through a path that names it another way too); a folder beside them is fine. */
static void test_state_dir(void)
{
    clear_env();
    struct config cfg;
    char err[512];
    static const char *const bad[][6] = {
        {"--data-dir", "/srv/in", "--state-dir", "/srv/in", NULL, NULL},
        {"--data-dir", "/srv/in", "--state-dir", "/srv/in/", NULL, NULL},
        {"--data-dir", "/srv/in", "--state-dir", "/srv/in/state", NULL, NULL},
        {"--data-dir", "/srv/in", "--state-dir", "/srv", NULL, NULL},
        {"--data-dir", "/srv/in", "--state-dir", "/srv/in/out/state", NULL, NULL},
        {"--data-dir", "/srv/in", "--output-dir", "/srv/out", "--state-dir", "/srv/out"},
        {"--data-dir", "/srv/in", "--output-dir", "/srv/out", "--state-dir", "/srv/out/st"},
        {"--state-dir", "/", "--data-dir", "/srv/in", NULL, NULL},
        {"--state-dir", "", NULL, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(load(&cfg, err, sizeof err, bad[i]), -1);
        CHECK(strstr(err, "--state-dir") != NULL);
    }
    CHECK_EQ_INT(load(&cfg, err, sizeof err,
                      ARGS("--data-dir", "/srv/in", "--state-dir", "/srv/state", "--result-ttl",
                           "1s", "--max-stored-bytes", "1MiB")),
                 0);
    CHECK_EQ_STR(cfg.state_dir, "/srv/state");
    CHECK_EQ_INT(cfg.result_ttl_ms, 1000);
    CHECK_EQ_INT(cfg.max_stored_bytes, 1024 * 1024);
    CHECK_EQ_INT(
        load(&cfg, err, sizeof err, ARGS("--state-dir", "/srv/in-state", "--data-dir", "/srv/in")),
        0);
    setenv("BATCHD_STATE_DIR", "/var/lib/batchd/state", 1);
    setenv("BATCHD_RESULT_TTL", "90m", 1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, NULL), 0);
    CHECK_EQ_STR(cfg.state_dir, "/var/lib/batchd/state");
    CHECK_EQ_INT(cfg.result_ttl_ms, 90ull * 60 * 1000);
    clear_env();
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--result-ttl", "0")), -1);
    CHECK(strstr(err, "--result-ttl") != NULL);
}

static void test_env_and_flags(void)
{
    clear_env();
    struct config cfg;
    char err[512];
    setenv("BATCHD_MAX_JOBS", "5", 1);
    setenv("BATCHD_LISTEN", "127.0.0.1:0", 1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, NULL), 0);
    CHECK_EQ_INT(cfg.max_jobs, 5);
    CHECK_EQ_STR(cfg.listen, "127.0.0.1:0");
    /* The flag wins over its twin, in either spelling. */
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-jobs", "7")), 0);
    CHECK_EQ_INT(cfg.max_jobs, 7);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-jobs=8", "--workers=3")), 0);
    CHECK_EQ_INT(cfg.max_jobs, 8);
    CHECK_EQ_INT(cfg.workers, 3);
    CHECK_EQ_STR(cfg.listen, "127.0.0.1:0");
    /* A bad twin is refused like a bad flag. */
    setenv("BATCHD_MAX_JOBS", "many", 1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, NULL), -1);
    CHECK(strstr(err, "--max-jobs") != NULL);
    clear_env();
    /* The output folder follows the data folder unless given. */
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--data-dir", "/srv/photos")), 0);
    CHECK_EQ_STR(cfg.output_dir, "/srv/photos/out");
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--data-dir", "/a", "--output-dir", "/b")), 0);
    CHECK_EQ_STR(cfg.output_dir, "/b");
}

static void test_sizes(void)
{
    clear_env();
    static const struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {
        {"4096", 4096},
        {"4096B", 4096},
        {"10K", 10240},
        {"512KiB", 512u * 1024},
        {"2MiB", 2u * 1024 * 1024},
        {"2MB", 2000000},
        {"1.5GiB", 1536ull * 1024 * 1024},
        {"3GB", 3000000000ull},
    };
    struct config cfg;
    char err[512];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-body", ok[i].text)), 0);
        CHECK_EQ_INT(cfg.max_body_bytes, ok[i].bytes);
    }
    static const char *const bad[] = {"", "abc", "-1", "10XB", "1 GiB", "nan", "inf", "1e30"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-body", bad[i])), -1);
        CHECK(strstr(err, "--max-body") != NULL);
    }
}

static void test_durations(void)
{
    clear_env();
    static const struct {
        const char *text;
        uint64_t ms;
    } ok[] = {
        {"500ms", 500}, {"2", 2000}, {"2s", 2000},      {"1.5s", 1500},
        {"2m", 120000}, {"0", 0},    {"24h", 86400000}, {"0.5h", 1800000},
    };
    struct config cfg;
    char err[512];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--job-timeout", ok[i].text)), 0);
        CHECK_EQ_INT(cfg.job_timeout_ms, ok[i].ms);
    }
    static const char *const bad[] = {"5d", "ms", "-5s", "1.5.s", "h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--grace-period", bad[i])), -1);
        CHECK(strstr(err, "--grace-period") != NULL);
    }
}

static void test_refusals(void)
{
    clear_env();
    struct config cfg;
    char err[512];
    /* Counts are whole numbers. */
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-jobs", "10.5")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-jobs", "10KiB")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-jobs", "0")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-batches", "0")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--workers", "0")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--workers", "1025")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--workers", "2x")), -1);
    CHECK(strstr(err, "--workers") != NULL);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--log-format", "xml")), -1);
    CHECK(strstr(err, "--log-format") != NULL);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--log-level", "loud")), -1);
    CHECK(strstr(err, "--log-level") != NULL);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--log-level", "debug")), 0);
    CHECK_EQ_STR(cfg.log_level, "debug");
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--no-such-flag", "1")), -1);
    CHECK(strstr(err, "--no-such-flag") != NULL);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max-jobs")), -1);
    CHECK(strstr(err, "needs a value") != NULL);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("max-jobs")), -1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--max")), -1); /* no prefix matching */
    char longer[400];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--listen", longer)), -1);
    CHECK(strstr(err, "too long") != NULL);
}

static void test_help_and_table(void)
{
    clear_env();
    struct config cfg;
    char err[512];
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--help")), 1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("-h")), 1);
    CHECK_EQ_INT(load(&cfg, err, sizeof err, ARGS("--config-table")), 1);
    /* Every row of the table names a flag and its BATCHD_ twin. */
    FILE *f = tmpfile();
    config_print_table(f);
    rewind(f);
    char line[1024];
    int rows = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "| `--", 5) == 0) {
            rows++;
            CHECK(strstr(line, "| `BATCHD_") != NULL);
        }
    }
    fclose(f);
    CHECK(rows >= 19);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"defaults", test_defaults},
    {"env_and_flags", test_env_and_flags},
    {"sizes", test_sizes},
    {"durations", test_durations},
    {"state_dir", test_state_dir},
    {"refusals", test_refusals},
    {"help_and_table", test_help_and_table},
};
/* clang-format on */

CHECK_MAIN("test_config", cases)
