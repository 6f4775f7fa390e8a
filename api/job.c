/* The one place where a job's own params meet its batch's (api/job.h). */
#include "job.h"

json_t *job_params_merge(const json_t *params, const json_t *job_params, int *oom)
{
    *oom = 0;
    if (job_params == NULL || params == NULL || !json_is_object(params) ||
        !json_is_object(job_params)) {
        /* jansson's incref takes a non-const pointer; the reference is the caller's. */
        json_t *only = (json_t *)(job_params != NULL ? job_params : params);
        return json_incref(only);
    }
    json_t *merged = json_copy((json_t *)params);
    if (merged == NULL || json_object_update(merged, (json_t *)job_params) != 0) {
        json_decref(merged);
        *oom = 1;
        return NULL;
    }
    return merged;
}
