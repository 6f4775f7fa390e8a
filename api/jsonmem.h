/* jansson's allocator, counted. jansson 2.14's lexer drops an allocation that fails
 * (lex_save ignores strbuffer_append's result) and parses on with a byte missing, so
 * json_loadb may return a document it did not read whole ("16" read as "1"), or a syntax
 * error for valid text. A parser compares jsonmem_failures() before and after and treats a
 * change as out of memory, whatever json_loadb returned. */
#ifndef BATCHD_API_JSONMEM_H
#define BATCHD_API_JSONMEM_H

/* Routes jansson's allocations through the counter (json_set_alloc_funcs). Call once at
 * start, before any thread and any JSON value exist. */
void jsonmem_install(void);

/* The number of jansson allocations that failed in this thread so far. */
unsigned long jsonmem_failures(void);

#endif
