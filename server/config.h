/* The server's configuration: every flag of SPEC §1 with its BATCHD_* environment twin
 * (flags win), defaults, and the derived values (--workers auto from the CPU affinity mask
 * and the cgroup CPU quota). */
#ifndef BATCHD_SERVER_CONFIG_H
#define BATCHD_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config {
    char listen[256];
    char workers_arg[16]; /* "auto" or a number, as given */
    int workers;          /* resolved */
    char data_dir[4096];
    char output_dir[4096];
    char state_dir[4096];      /* the store (SPEC §8) */
    uint64_t result_ttl_ms;    /* kept this long after a stored batch ends */
    uint64_t max_stored_bytes; /* the store's cap: past it, 507 */
    char redis_url[1024];      /* cluster mode (SPEC §9); "" none */
    uint64_t claim_timeout_ms; /* a chunk untouched this long is claimed again */
    uint64_t cluster_max_upload; /* larger uploads run where they were received */
    char replica_name[128];      /* resolved: the host name when not given */
    char modules[8192]; /* --module paths, ':'-separated (the flag repeats) */
    uint64_t max_body_bytes;
    char max_upload_memory_arg[32]; /* "auto" or a size, as given */
    uint64_t max_upload_memory;     /* resolved: bytes of request bodies held at once */
    uint64_t max_jobs;
    uint64_t max_queued_jobs;
    uint64_t max_batches;
    uint64_t job_timeout_ms;
    uint64_t max_input_pixels;
    uint64_t max_output_pixels;
    uint64_t worker_memory_bytes;
    uint64_t lua_memory_bytes;
    uint64_t recycle_after;
    uint64_t grace_period_ms;
    uint64_t connection_timeout_s;
    uint64_t header_timeout_ms; /* 0: none */
    uint64_t min_body_rate;     /* bytes/s; 0: none */
    uint64_t max_connections;
    char log_format[16]; /* logfmt | json */
    char log_level[16];  /* error | warn | info | debug */
    char auth_token_file[4096];
    char cors_origin[1024];
};

/* Fills CFG from defaults, then the environment, then ARGV. Returns 0; 1 when --help was
 * printed to OUT; -1 with a message on ERR for a bad flag or value. */
int config_load(struct config *cfg, int argc, char **argv, FILE *out, FILE *err);

/* The CPUs this process may use: its affinity mask, capped by the cgroup v2 (or v1) CPU
 * quota, at least 1. */
int config_cpus_available(void);

/* The default of --max-upload-memory: a quarter of the physical memory, or of the cgroup v2
 * (or v1) memory limit when that is lower; at least 64 MiB. */
uint64_t config_upload_memory_auto(void);

/* Prints the flag table (flag, env, default, help) as Markdown to OUT (the README's table). */
void config_print_table(FILE *out);

#endif
