/* Flags and their environment twins, from one table (cfg_opts): defaults, the environment,
 * argv, the checks across flags, --help and --config-table. What a flag does is its users'. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* CFG_LIST: a string flag that may repeat; each repetition adds a ':'-separated item (its
 * environment twin holds the whole list). */
enum cfg_kind { CFG_STRING, CFG_U64, CFG_BYTES, CFG_MS, CFG_LIST };

struct cfg_opt {
    const char *flag;
    const char *env;
    enum cfg_kind kind;
    size_t offset;
    size_t size; /* for strings */
    const char *def;
    const char *help;
};

#define OPT_S(f, e, field, d, h) {f, e, CFG_STRING, offsetof(struct config, field), \
                                  sizeof(((struct config *)0)->field), d, h}
#define CFG_SIZEOF(fld) sizeof(((struct config *)0)->fld)
/* clang-format off */
#define OPT_L(f, e, x, d, h) {f, e, CFG_LIST, offsetof(struct config, x), CFG_SIZEOF(x), d, h}
/* clang-format on */
#define OPT_N(f, e, k, field, d, h) {f, e, k, offsetof(struct config, field), 0, d, h}

static const struct cfg_opt cfg_opts[] = {
    OPT_S("listen", "BATCHD_LISTEN", listen, "0.0.0.0:8080",
          "address and port to serve on; port 0 picks a free port (logged)"),
    OPT_S("workers", "BATCHD_WORKERS", workers_arg, "auto",
          "worker processes; auto = CPUs this process may use (affinity, cgroup cpu.max)"),
    OPT_S("data-dir", "BATCHD_DATA_DIR", data_dir, "",
          "folder image inputs {\"path\": ...} are read from; none = path inputs refused"),
    OPT_S("output-dir", "BATCHD_OUTPUT_DIR", output_dir, "",
          "folder for output \"path\" results (default: DATA_DIR/out)"),
    OPT_S("state-dir", "BATCHD_STATE_DIR", state_dir, "./batchd-state",
          "folder of the store of stored batches (SQLite); one server per folder, apart from "
          "--data-dir and --output-dir"),
    OPT_N("result-ttl", "BATCHD_RESULT_TTL", CFG_MS, result_ttl_ms, "24h",
          "how long a stored batch and its results are kept after it ends; then 410"),
    OPT_N("max-stored-bytes", "BATCHD_MAX_STORED_BYTES", CFG_BYTES, max_stored_bytes, "10GiB",
          "bytes the store may hold (specs, inputs, results); past it, new stored batches 507; "
          "0 = no cap"),
    OPT_S("redis", "BATCHD_REDIS", redis_url, "",
          "cluster mode (SPEC §9): redis://IP:PORT[/DB] or unix:/PATH[?db=N]; the store, queue "
          "and results of stored batches go there, shared by every replica; none = --state-dir"),
    OPT_N("claim-timeout", "BATCHD_CLAIM_TIMEOUT", CFG_MS, claim_timeout_ms, "30s",
          "cluster: a chunk its replica has not touched for this long is run by another"),
    OPT_N("cluster-max-upload", "BATCHD_CLUSTER_MAX_UPLOAD", CFG_BYTES, cluster_max_upload,
          "256MiB", "cluster: a stored batch uploading more runs on the replica that got it"),
    OPT_S("replica-name", "BATCHD_REPLICA_NAME", replica_name, "",
          "cluster: this replica's name in logs, metrics and status (default: the host name)"),
    OPT_N("max-body", "BATCHD_MAX_BODY", CFG_BYTES, max_body_bytes, "1GiB", "largest request body"),
    OPT_S("max-upload-memory", "BATCHD_MAX_UPLOAD_MEMORY", max_upload_memory_arg, "auto",
          "bytes of request bodies held at once over all connections; past it, 503; auto = "
          "1/4 of RAM or of the cgroup memory.max"),
    OPT_N("max-jobs", "BATCHD_MAX_JOBS", CFG_U64, max_jobs, "10000000", "jobs per batch"),
    OPT_N("max-queued-jobs", "BATCHD_MAX_QUEUED_JOBS", CFG_U64, max_queued_jobs, "20000000",
          "jobs queued or running over all batches; past it, 503"),
    OPT_N("max-batches", "BATCHD_MAX_BATCHES", CFG_U64, max_batches, "1024",
          "batches running at once; past it, 503"),
    OPT_N("job-timeout", "BATCHD_JOB_TIMEOUT", CFG_MS, job_timeout_ms, "60s",
          "default per-job time limit (a batch's timeout_ms overrides it)"),
    OPT_N("max-input-pixels", "BATCHD_MAX_INPUT_PIXELS", CFG_U64, max_input_pixels, "100000000",
          "largest input image, width x height"),
    OPT_N("max-output-pixels", "BATCHD_MAX_OUTPUT_PIXELS", CFG_U64, max_output_pixels, "100000000",
          "largest output image, width x height"),
    OPT_N("worker-memory", "BATCHD_WORKER_MEMORY", CFG_BYTES, worker_memory_bytes, "4GiB",
          "address-space limit of each worker"),
    OPT_N("lua-memory", "BATCHD_LUA_MEMORY", CFG_BYTES, lua_memory_bytes, "64MiB",
          "memory cap of an op lua interpreter (one batch on one worker); past it, too_large"),
    OPT_N("recycle-after", "BATCHD_RECYCLE_AFTER", CFG_U64, recycle_after, "100000",
          "jobs a worker runs before it is replaced; 0 = never"),
    OPT_N("grace-period", "BATCHD_GRACE_PERIOD", CFG_MS, grace_period_ms, "30s",
          "on SIGTERM, how long running batches may take to finish"),
    OPT_N("connection-timeout", "BATCHD_CONNECTION_TIMEOUT", CFG_U64, connection_timeout_s, "120",
          "seconds an idle (not streaming) connection is kept"),
    OPT_N("header-timeout", "BATCHD_HEADER_TIMEOUT", CFG_MS, header_timeout_ms, "10s",
          "time a request's headers may take, from accept or the request's first byte; 0 = none"),
    OPT_N("min-body-rate", "BATCHD_MIN_BODY_RATE", CFG_BYTES, min_body_rate, "1KiB",
          "a body may take --header-timeout plus 1 s per this many bytes; 0 = none"),
    OPT_N("max-connections", "BATCHD_MAX_CONNECTIONS", CFG_U64, max_connections, "4096",
          "open client connections"),
    OPT_L("module", "BATCHD_MODULES", modules, "",
          "C module (.so, batchd_module.h) to load at start; repeat the flag, or PATH:PATH"),
    OPT_S("log-format", "BATCHD_LOG_FORMAT", log_format, "logfmt", "logfmt or json"),
    OPT_S("log-level", "BATCHD_LOG_LEVEL", log_level, "info",
          "least severe lines logged: error, warn, info or debug"),
    OPT_S("auth-token-file", "BATCHD_AUTH_TOKEN_FILE", auth_token_file, "",
          "file of bearer tokens, one per line, every request but health checks must carry"),
    OPT_S("cors-origin", "BATCHD_CORS_ORIGIN", cors_origin, "",
          "origins allowed to call from a browser: comma-separated, or *"),
};

#define CFG_NOPTS (sizeof cfg_opts / sizeof cfg_opts[0])

/* "1GiB", "512MB", "4096" -> bytes; "60s", "500ms", "2m", "24h" -> milliseconds. */
static int parse_number(enum cfg_kind kind, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0 || !isfinite(v)) {
        return -1;
    }
    double mul = 1;
    if (kind == CFG_BYTES) {
        if (strcmp(end, "") == 0 || strcmp(end, "B") == 0) {
            mul = 1;
        } else if (strcmp(end, "KiB") == 0 || strcmp(end, "K") == 0) {
            mul = 1024.0;
        } else if (strcmp(end, "MiB") == 0 || strcmp(end, "M") == 0) {
            mul = 1024.0 * 1024;
        } else if (strcmp(end, "GiB") == 0 || strcmp(end, "G") == 0) {
            mul = 1024.0 * 1024 * 1024;
        } else if (strcmp(end, "KB") == 0) {
            mul = 1e3;
        } else if (strcmp(end, "MB") == 0) {
            mul = 1e6;
        } else if (strcmp(end, "GB") == 0) {
            mul = 1e9;
        } else {
            return -1;
        }
    } else if (kind == CFG_MS) {
        if (strcmp(end, "ms") == 0) {
            mul = 1;
        } else if (strcmp(end, "s") == 0 || strcmp(end, "") == 0) {
            mul = 1000;
        } else if (strcmp(end, "m") == 0) {
            mul = 60000;
        } else if (strcmp(end, "h") == 0) {
            mul = 3600000;
        } else {
            return -1;
        }
    } else if (*end != '\0' || v != floor(v)) {
        return -1;
    }
    double r = v * mul;
    if (r > 1.8e19) {
        return -1;
    }
    *out = (uint64_t)r;
    return 0;
}

static int cfg_set(struct config *cfg, const struct cfg_opt *o, const char *val, FILE *err)
{
    char *field = (char *)cfg + o->offset;
    if (o->kind == CFG_STRING || o->kind == CFG_LIST) {
        size_t n = strlen(val);
        if (n >= o->size) {
            fprintf(err, "batchd: --%s: value too long\n", o->flag);
            return -1;
        }
        memcpy(field, val, n + 1);
        return 0;
    }
    uint64_t v;
    if (parse_number(o->kind, val, &v) != 0) {
        fprintf(err, "batchd: --%s: bad value \"%s\"\n", o->flag, val);
        return -1;
    }
    memcpy(field, &v, sizeof v);
    return 0;
}

static int read_int_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return -1;
    }
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

int config_cpus_available(void)
{
    int cpus = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        cpus = CPU_COUNT(&set);
    }
    char buf[128];
    double quota = -1, period = -1;
    if (read_int_file("/sys/fs/cgroup/cpu.max", buf, sizeof buf) == 0) {
        /* cgroup v2: "max 100000" or "200000 100000" */
        char *end = NULL;
        if (strncmp(buf, "max", 3) != 0) {
            quota = strtod(buf, &end);
            period = strtod(end, NULL);
        }
    } else if (read_int_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", buf, sizeof buf) == 0) {
        quota = strtod(buf, NULL);
        if (read_int_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", buf, sizeof buf) == 0) {
            period = strtod(buf, NULL);
        }
    }
    if (quota > 0 && period > 0) {
        int q = (int)ceil(quota / period);
        if (q < cpus) {
            cpus = q;
        }
    }
    return cpus < 1 ? 1 : cpus;
}

/* PATH made absolute with every symlink resolved, into OUT (PATH_MAX bytes): realpath, or,
 * for a folder not made yet, its nearest existing parent's realpath and the rest as
 * written. Returns 0, or -1 when not even that can be told. */
static int canonical_dir(const char *path, char *out)
{
    if (realpath(path, out) != NULL) {
        return 0;
    }
    if (errno != ENOENT) {
        return -1;
    }
    char parent[PATH_MAX], up[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", path);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') {
        parent[--n] = '\0';
    }
    char *slash = strrchr(parent, '/');
    const char *last = slash != NULL ? slash + 1 : parent;
    if (strcmp(last, ".") == 0 || strcmp(last, "..") == 0 || *last == '\0') {
        return -1;
    }
    char name[PATH_MAX];
    snprintf(name, sizeof name, "%s", last);
    if (slash == parent) {
        snprintf(up, sizeof up, "/");
    } else if (slash != NULL) {
        *slash = '\0';
        snprintf(up, sizeof up, "%s", parent);
    } else {
        snprintf(up, sizeof up, ".");
    }
    if (canonical_dir(up, parent) != 0) {
        return -1;
    }
    int w = snprintf(out, PATH_MAX, "%s%s%s", parent, strcmp(parent, "/") == 0 ? "" : "/", name);
    return w > 0 && w < PATH_MAX ? 0 : -1;
}

/* Outputs may replace files in the output dir (a rerun replaces its own outputs), so that
 * folder must hold no input: it may be inside the data dir (the default DATA_DIR/out;
 * workers then refuse inputs from it), never the data dir itself or a folder around it. */
static int check_output_dir(const struct config *cfg, FILE *err)
{
    char data[PATH_MAX], out[PATH_MAX];
    if (cfg->data_dir[0] == '\0' || cfg->output_dir[0] == '\0' ||
        canonical_dir(cfg->data_dir, data) != 0 || canonical_dir(cfg->output_dir, out) != 0) {
        return 0;
    }
    size_t n = strlen(out);
    int holds = strcmp(out, "/") == 0 ||
                (strncmp(data, out, n) == 0 && (data[n] == '\0' || data[n] == '/'));
    if (holds) {
        fprintf(err,
                "batchd: --output-dir (%s) is --data-dir or holds it: outputs could replace "
                "inputs; give it a folder of its own (the default is DATA_DIR/out)\n",
                cfg->output_dir);
        return -1;
    }
    return 0;
}

/* 1 if the canonical folder INNER is OUTER or inside it. */
static int dir_within(const char *inner, const char *outer)
{
    size_t n = strlen(outer);
    return strcmp(outer, "/") == 0 ||
           (strncmp(inner, outer, n) == 0 && (inner[n] == '\0' || inner[n] == '/'));
}

/* The store's folder holds its database, WAL and lock: it must not be, hold or be inside
 * the folder inputs are read from or outputs written to (a job could read the database as
 * an input or an output replace it, and expiry cleans only its own files). */
static int check_state_dir(const struct config *cfg, FILE *err)
{
    char state[PATH_MAX], other[PATH_MAX];
    if (cfg->state_dir[0] == '\0') {
        fprintf(err, "batchd: --state-dir must name a folder\n");
        return -1;
    }
    if (canonical_dir(cfg->state_dir, state) != 0) {
        return 0; /* not a folder that can be made: the store says why at start */
    }
    static const struct {
        const char *flag;
        size_t offset;
    } others[] = {{"--data-dir", offsetof(struct config, data_dir)},
                  {"--output-dir", offsetof(struct config, output_dir)}};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        const char *dir = (const char *)cfg + others[i].offset;
        if (dir[0] == '\0' || canonical_dir(dir, other) != 0) {
            continue;
        }
        if (dir_within(state, other) || dir_within(other, state)) {
            fprintf(err,
                    "batchd: --state-dir (%s) is %s (%s), inside it or holds it: the store's "
                    "database must not mix with inputs or outputs; give it a folder of its own\n",
                    cfg->state_dir, others[i].flag, dir);
            return -1;
        }
    }
    return 0;
}

/* Cluster mode: a replica needs a name that no other live replica has (its consumer in the
 * queue, the label of its metrics): the host name unless given. */
static int check_cluster(struct config *cfg, FILE *err)
{
    if (cfg->redis_url[0] == '\0') {
        return 0;
    }
    if (strncmp(cfg->redis_url, "redis://", 8) != 0 && strncmp(cfg->redis_url, "unix:", 5) != 0) {
        fprintf(err, "batchd: --redis must be redis://IP:PORT[/DB] or unix:/PATH[?db=N], not %s\n",
                cfg->redis_url);
        return -1;
    }
    if (cfg->claim_timeout_ms < 100 || cfg->claim_timeout_ms > 24ull * 3600 * 1000) {
        fprintf(err, "batchd: --claim-timeout must be between 100ms and 24h\n");
        return -1;
    }
    if (cfg->replica_name[0] == '\0' &&
        gethostname(cfg->replica_name, sizeof cfg->replica_name - 1) != 0) {
        snprintf(cfg->replica_name, sizeof cfg->replica_name, "batchd-%ld", (long)getpid());
    }
    for (const char *p = cfg->replica_name; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.')) {
            fprintf(err,
                    "batchd: --replica-name may hold letters, digits, '-', '_' and '.' only\n");
            return -1;
        }
    }
    return 0;
}

uint64_t config_upload_memory_auto(void)
{
    uint64_t mem = 0;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
        mem = (uint64_t)pages * (uint64_t)page;
    }
    char buf[64];
    /* cgroup v2 "max" or a byte count; v1 says "unlimited" with a huge number. */
    if (read_int_file("/sys/fs/cgroup/memory.max", buf, sizeof buf) == 0 ||
        read_int_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", buf, sizeof buf) == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long long lim = strtoull(buf, &end, 10);
        if (end != buf && errno == 0 && lim > 0 && (mem == 0 || lim < mem)) {
            mem = lim;
        }
    }
    uint64_t q = mem / 4;
    return q < (64u << 20) ? (64u << 20) : q;
}

static void config_usage(FILE *out)
{
    fprintf(out, "usage: batchd [--flag VALUE ...]\n\n");
    for (size_t i = 0; i < CFG_NOPTS; i++) {
        fprintf(out, "  --%-20s %-28s default %-14s %s\n", cfg_opts[i].flag, cfg_opts[i].env,
                cfg_opts[i].def[0] ? cfg_opts[i].def : "(none)", cfg_opts[i].help);
    }
}

void config_print_table(FILE *out)
{
    fprintf(out, "| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < CFG_NOPTS; i++) {
        fprintf(out, "| `--%s` | `%s` | %s | %s |\n", cfg_opts[i].flag, cfg_opts[i].env,
                cfg_opts[i].def[0] ? cfg_opts[i].def : "—", cfg_opts[i].help);
    }
}

/* The flags of ARGV over the defaults and the environment. Returns 0, 1 (--help or
 * --config-table printed: exit 0) or -1 (said on ERR). */
static int config_parse_args(struct config *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    char listed[CFG_NOPTS] = {0}; /* a list flag seen on the command line */
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            config_usage(out);
            return 1;
        }
        if (strcmp(arg, "--config-table") == 0) {
            config_print_table(out);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(err, "batchd: unexpected argument \"%s\"\n", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct cfg_opt *o = NULL;
        for (size_t i = 0; i < CFG_NOPTS; i++) {
            if (strlen(cfg_opts[i].flag) == nlen && strncmp(cfg_opts[i].flag, name, nlen) == 0) {
                o = &cfg_opts[i];
            }
        }
        if (o == NULL) {
            fprintf(err, "batchd: unknown flag \"%s\" (see --help)\n", arg);
            return -1;
        }
        const char *val = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (val == NULL) {
            fprintf(err, "batchd: --%s needs a value\n", o->flag);
            return -1;
        }
        if (o->kind == CFG_LIST && listed[o - cfg_opts]) {
            /* A repeated list flag appends. */
            char *field = (char *)cfg + o->offset;
            size_t have = strlen(field), n = strlen(val);
            if (have + 1 + n >= o->size) {
                fprintf(err, "batchd: --%s: too many values\n", o->flag);
                return -1;
            }
            field[have] = ':';
            memcpy(field + have + 1, val, n + 1);
            continue;
        }
        listed[o - cfg_opts] = 1;
        if (cfg_set(cfg, o, val, err) != 0) {
            return -1;
        }
    }
    return 0;
}

int config_load(struct config *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CFG_NOPTS; i++) {
        if (cfg_set(cfg, &cfg_opts[i], cfg_opts[i].def, err) != 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < CFG_NOPTS; i++) {
        const char *v = getenv(cfg_opts[i].env);
        if (v != NULL && cfg_set(cfg, &cfg_opts[i], v, err) != 0) {
            return -1;
        }
    }
    int rc = config_parse_args(cfg, argc, argv, out, err);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(cfg->workers_arg, "auto") == 0) {
        cfg->workers = config_cpus_available();
    } else {
        char *end = NULL;
        long n = strtol(cfg->workers_arg, &end, 10);
        if (end == cfg->workers_arg || *end != '\0' || n < 1 || n > 1024) {
            fprintf(err, "batchd: --workers must be auto or 1..1024\n");
            return -1;
        }
        cfg->workers = (int)n;
    }
    if (strcmp(cfg->max_upload_memory_arg, "auto") == 0) {
        cfg->max_upload_memory = config_upload_memory_auto();
    } else if (parse_number(CFG_BYTES, cfg->max_upload_memory_arg, &cfg->max_upload_memory) != 0 ||
               cfg->max_upload_memory == 0) {
        fprintf(err, "batchd: --max-upload-memory must be auto or a size of at least 1 byte\n");
        return -1;
    }
    if (strcmp(cfg->log_format, "logfmt") != 0 && strcmp(cfg->log_format, "json") != 0) {
        fprintf(err, "batchd: --log-format must be logfmt or json\n");
        return -1;
    }
    if (strcmp(cfg->log_level, "error") != 0 && strcmp(cfg->log_level, "warn") != 0 &&
        strcmp(cfg->log_level, "info") != 0 && strcmp(cfg->log_level, "debug") != 0) {
        fprintf(err, "batchd: --log-level must be error, warn, info or debug\n");
        return -1;
    }
    if (cfg->max_batches < 1 || cfg->max_batches > INT_MAX || cfg->max_jobs < 1) {
        fprintf(err, "batchd: --max-batches and --max-jobs must be at least 1\n");
        return -1;
    }
    if (cfg->output_dir[0] == '\0' && cfg->data_dir[0] != '\0') {
        snprintf(cfg->output_dir, sizeof cfg->output_dir, "%.4000s/out", cfg->data_dir);
    }
    if (check_output_dir(cfg, err) != 0 || check_state_dir(cfg, err) != 0) {
        return -1;
    }
    if (cfg->result_ttl_ms == 0 || cfg->result_ttl_ms > 100ull * 366 * 24 * 3600 * 1000) {
        fprintf(err, "batchd: --result-ttl must be between 1ms and 100 years\n");
        return -1;
    }
    return check_cluster(cfg, err);
}
