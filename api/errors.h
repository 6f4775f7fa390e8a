/* The one list of error codes batchd can answer with: request refusals (SPEC §2-3) and
 * per-job errors (SPEC §4). The enum, the wire name and the HTTP status are all generated
 * from BATCHD_ERRNO_MAP, so the API, the docs test and the code cannot disagree.
 * This module knows nothing of HTTP libraries or processes. */
#ifndef BATCHD_API_ERRORS_H
#define BATCHD_API_ERRORS_H

/* XX(ENUM_SUFFIX, "wire_name", "default message", http_status, per_job) */
/* clang-format off */
#define BATCHD_ERRNO_MAP(XX)                                                                    \
    XX(BAD_REQUEST, "bad_request", "the batch is malformed", 400, 0)                            \
    XX(INVALID_JSON, "invalid_json", "the body is not valid JSON", 400, 0)                      \
    XX(UNKNOWN_OP, "unknown_op", "no such op", 400, 0)                                          \
    XX(INVALID_PARAM, "invalid_param", "a parameter is out of range or of the wrong type", 400, \
       0)                                                                                       \
    XX(TOO_MANY_JOBS, "too_many_jobs", "the batch has more jobs than allowed", 413, 0)          \
    XX(BODY_TOO_LARGE, "body_too_large", "the request body is larger than allowed", 413, 0)     \
    XX(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Content-Type must be application/json " \
       "or multipart/form-data", 415, 0)                                                          \
    XX(NOT_ACCEPTABLE, "not_acceptable", "no acceptable result format", 406, 0)                 \
    XX(NOT_FOUND_ROUTE, "not_found", "no such endpoint", 404, 0)                                \
    XX(METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint", 405, 0) \
    XX(UNAUTHORIZED, "unauthorized", "a valid bearer token is required", 401, 0)                \
    XX(OVERLOADED, "overloaded", "too many queued jobs or batches; retry later", 503, 0)        \
    XX(DRAINING, "draining", "the server is shutting down; retry on another replica", 503, 0)   \
    XX(INTERNAL, "internal_error", "internal error", 500, 0)                                    \
    XX(BATCH_NOT_FOUND, "not_found", "no such batch", 404, 0)                                   \
    XX(EXPIRED, "expired", "the batch ended longer ago than the server keeps results", 410, 0)  \
    XX(NOT_FINISHED, "not_finished", "the batch has not ended yet", 409, 0)                     \
    XX(KEY_REUSED, "idempotency_key_reused", "this Idempotency-Key was used with another "       \
       "body", 422, 0)                                                                          \
    XX(STORE_FULL, "store_full", "the batch would take the store past --max-stored-bytes", 507, 0) \
    XX(STORE_UNAVAILABLE, "store_unavailable", "the batch store cannot be written now; retry "  \
       "later", 503, 0)                                                                         \
    XX(INVALID_INPUT, "invalid_input", "the input is not valid for this op", 0, 1)              \
    XX(DOMAIN_ERROR, "domain_error", "the input is outside the op's domain", 0, 1)              \
    XX(OVERFLOW, "overflow", "the result does not fit in a 64-bit integer", 0, 1)              \
    XX(TIMEOUT, "timeout", "the job ran past its time limit", 0, 1)                             \
    XX(WORKER_CRASHED, "worker_crashed", "the worker running this job died", 0, 1)              \
    XX(TOO_LARGE, "too_large", "the image has more pixels than allowed", 0, 1)                  \
    XX(UNSUPPORTED_FORMAT, "unsupported_format", "the input is neither JPEG nor PNG", 0, 1)     \
    XX(CORRUPT_IMAGE, "corrupt_image", "the image is truncated or corrupt", 0, 1)               \
    XX(NOT_FOUND, "not_found", "no such file under the data dir", 0, 1)                         \
    XX(FORBIDDEN_PATH, "forbidden_path", "the path leads outside the data dir", 0, 1)           \
    XX(CANCELLED, "cancelled", "the job was not started before the batch ended", 0, 1)          \
    XX(SCRIPT_ERROR, "script_error", "the script raised an error", 0, 1)
/* clang-format on */

/* Error codes are negative so that functions can return 0 or -BATCHD_E_x. */
enum batchd_err {
    BATCHD_OK = 0,
#define XX(e, name, msg, status, per_job) BATCHD_E_##e,
    BATCHD_ERRNO_MAP(XX)
#undef XX
    BATCHD_E_COUNT
};

/* The wire name ("domain_error") of an error code, positive or negative; "internal_error"
 * for anything unknown. Returns a static string. */
const char *batchd_err_name(int err);

/* The default human message of an error code. Returns a static string. */
const char *batchd_err_message(int err);

/* The HTTP status of a request-level error code; 0 for per-job codes. */
int batchd_err_http_status(int err);

/* 1 if the code is one of SPEC §4's per-job codes. */
int batchd_err_is_per_job(int err);

/* The code whose wire name is NAME, as a positive enum value, or 0 if none. Per-job codes win
 * when two share a name ("not_found"). */
int batchd_err_from_name(const char *name);

#endif
