/* Opening the SQLite store: the state dir checked and locked, the write and read
 * connections opened and set up (pragmas, schema, probe commit, quick_check), the statements
 * prepared. Start-up refusals are written here. Not the writer thread nor closing (store_sqlite.c).
 */
#include "sq_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* clang-format off */
static const char *const wst_sql[W_COUNT] = {
    [W_FIND_KEY] = "SELECT id, fingerprint FROM batches WHERE owner = ?1 AND idem_key = ?2",
    [W_INSERT_BATCH] = "INSERT INTO batches (id, owner, idem_key, fingerprint, state, njobs, op,"
                       " request_id, created_ms, spec, bytes) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6,"
                       " ?7, ?8, ?9, ?10)",
    [W_INSERT_INPUT] = "INSERT INTO inputs (bno, idx, chunk, data) VALUES (?1, ?2, ?3, ?4)",
    [W_INSERT_RESULT] = "INSERT OR IGNORE INTO results (k, bno, idx, ok, line)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [W_ADD_COUNTS] = "UPDATE batches SET nok = nok + ?2, nfailed = nfailed + ?3,"
                     " bytes = bytes + ?4, last_seq = ?5 WHERE bno = ?1",
    [W_START] = "UPDATE batches SET state = 1, started_ms = ?2 WHERE bno = ?1 AND state = 0",
    [W_CANCEL] = "UPDATE batches SET cancel_requested = 1 WHERE bno = ?1",
    [W_END] = "UPDATE batches SET state = ?2, summary = ?3, finished_ms = ?4, expires_ms = ?5,"
              " bytes = bytes + ?6 WHERE bno = ?1",
    [W_FIND_OWNED] = "SELECT bno, state, bytes FROM batches WHERE id = ?1 AND owner = ?2",
    [W_DELETE_RESULTS] = "DELETE FROM results WHERE k BETWEEN ?1 AND ?2",
    [W_DELETE_INPUTS] = "DELETE FROM inputs WHERE bno = ?1",
    [W_DELETE_BATCH] = "DELETE FROM batches WHERE bno = ?1",
    [W_FIND_EXPIRED] = "SELECT bno, bytes FROM batches WHERE expires_ms <= ?1 AND state IN (2, 3)"
                       " LIMIT ?2",
    [W_TOMBSTONE] = "UPDATE batches SET state = 4, spec = NULL, summary = NULL, idem_key = NULL,"
                    " fingerprint = NULL, bytes = 0 WHERE bno = ?1",
    [W_DROP_TOMBSTONES] = "DELETE FROM batches WHERE state = 4 AND expires_ms <= ?1",
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
};
/* clang-format on */

#define SQ_INFO_COLS                                                                               \
    "id, owner, state, cancel_requested, op, request_id, created_ms, started_ms, finished_ms,"     \
    " expires_ms, njobs, nok, nfailed, last_seq"

/* clang-format off */
static const char *const rst_sql[R_COUNT] = {
    [R_GET] = "SELECT " SQ_INFO_COLS ", bno FROM batches WHERE id = ?1",
    [R_LIST] = "SELECT " SQ_INFO_COLS " FROM batches WHERE owner = ?1 AND id < ?2 AND state <> 4"
               " AND (?3 < 0 OR state = ?3) ORDER BY id DESC LIMIT ?4",
    [R_RESULTS] = "SELECT k, idx, ok, line FROM results WHERE k > ?1 AND k <= ?2 ORDER BY k"
                  " LIMIT ?3",
    [R_BY_INDEX] = "SELECT k, idx, ok, line FROM results WHERE bno = ?1 AND idx >= ?2"
                   " ORDER BY idx LIMIT ?3",
    [R_SPEC] = "SELECT spec FROM batches WHERE id = ?1",
    [R_SUMMARY] = "SELECT summary FROM batches WHERE id = ?1",
    [R_INPUT] = "SELECT i.data FROM inputs i JOIN batches b ON b.bno = i.bno WHERE b.id = ?1"
                " AND i.idx = ?2 ORDER BY i.chunk",
    [R_UNFINISHED] = "SELECT id FROM batches WHERE state IN (0, 1) ORDER BY bno",
    [R_OPEN] = "SELECT bno, njobs, state FROM batches WHERE id = ?1",
    [R_OPEN_IDX] = "SELECT idx FROM results WHERE bno = ?1",
    [R_OPEN_SEQ] = "SELECT max(k) FROM results WHERE k BETWEEN ?1 AND ?2",
    [R_STATES] = "SELECT state, count(*) FROM batches GROUP BY state",
};

static const char sq_schema[] =
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS batches ("
    " bno INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner BLOB NOT NULL,"
    " idem_key TEXT, fingerprint BLOB, state INTEGER NOT NULL,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0, njobs INTEGER NOT NULL,"
    " nok INTEGER NOT NULL DEFAULT 0, nfailed INTEGER NOT NULL DEFAULT 0,"
    " last_seq INTEGER NOT NULL DEFAULT 0, op TEXT NOT NULL, request_id TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL DEFAULT 0,"
    " finished_ms INTEGER NOT NULL DEFAULT 0, expires_ms INTEGER,"
    " spec BLOB, summary BLOB, bytes INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS batches_key ON batches (owner, idem_key)"
    " WHERE idem_key IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, id);"
    "CREATE INDEX IF NOT EXISTS batches_expiry ON batches (expires_ms)"
    " WHERE expires_ms IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS inputs (bno INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " chunk INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (bno, idx, chunk)) WITHOUT ROWID;"
    /* k = bno << 32 | seq: a batch's results are one range of the table, in seq order. */
    "CREATE TABLE IF NOT EXISTS results (k INTEGER PRIMARY KEY, bno INTEGER NOT NULL,"
    " idx INTEGER NOT NULL, ok INTEGER NOT NULL, line BLOB NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS results_job ON results (bno, idx);";
/* clang-format on */

/* Refuses a state dir that is missing and cannot be made, not a directory, not writable or
 * full, by writing (and removing) a probe file in it. */
int sq_open_check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat sb;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        sq_errf(err, errlen, "state dir %s cannot be created: %s", dir, strerror(e));
        return e == ENOSPC || e == EDQUOT ? STORE_E_FULL : STORE_E_UNWRITABLE;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        sq_errf(err, errlen, "state dir %s is not a directory", dir);
        return STORE_E_UNWRITABLE;
    }
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.batchd-probe", dir);
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        sq_errf(err, errlen, "state dir %s is not writable: %s", dir, strerror(e));
        return e == ENOSPC || e == EDQUOT ? STORE_E_FULL : STORE_E_UNWRITABLE;
    }
    static const char page[4096];
    size_t done = 0;
    int e = 0;
    while (done < sizeof page && e == 0) {
        ssize_t n = write(fd, page + done, sizeof page - done);
        if (n > 0) {
            done += (size_t)n;
        } else {
            e = n < 0 ? errno : ENOSPC;
        }
    }
    if (e == 0 && fsync(fd) != 0) {
        e = errno;
    }
    close(fd);
    unlink(probe);
    if (e != 0) {
        sq_errf(err, errlen, "state dir %s cannot be written: %s", dir, strerror(e));
        return e == ENOSPC || e == EDQUOT || e == EFBIG ? STORE_E_FULL : STORE_E_UNWRITABLE;
    }
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < SQ_MIN_FREE) {
        sq_errf(err, errlen, "state dir %s: its file system is full (%llu bytes free, %u needed)",
                dir, (unsigned long long)vfs.f_bavail * vfs.f_frsize, SQ_MIN_FREE);
        return STORE_E_FULL;
    }
    return 0;
}

/* One process per state dir: two writers would each believe their own counters. The lock
 * goes with the process, SIGKILL included. */
int sq_open_lock_dir(struct sq_store *sq, const char *dir, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/lock", dir);
    sq->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sq->lock_fd < 0) {
        sq_errf(err, errlen, "state dir %s: cannot open %s: %s", dir, path, strerror(errno));
        return STORE_E_UNWRITABLE;
    }
    if (flock(sq->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        sq_errf(err, errlen, "state dir %s is in use by another process (%s)", dir,
                e == EWOULDBLOCK ? "its lock file is held" : strerror(e));
        return e == EWOULDBLOCK ? STORE_E_BUSY : STORE_E_IO;
    }
    return 0;
}

static int exec_all(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int open_fail(struct sq_store *sq, int rc, const char *what, char *err, size_t errlen)
{
    int code = sq_rc(rc);
    const char *msg = sq->wdb != NULL ? sqlite3_errmsg(sq->wdb) : sqlite3_errstr(rc);
    if (code == STORE_E_CORRUPT) {
        sq_errf(err, errlen,
                "%s is not a batchd store or is damaged (%s: %s); refusing to start on it: move "
                "it away to start empty, or restore it",
                sq->path, what, msg);
    } else if (code == STORE_E_FULL) {
        sq_errf(err, errlen, "%s: the disk is full (%s: %s)", sq->path, what, msg);
    } else {
        sq_errf(err, errlen, "%s cannot be %s (%s)", sq->path, what, msg);
    }
    return code;
}

/* Opens the write connection and tells a new file from ours: a new one gets auto_vacuum and
 * our application_id, an old one must carry that id. *TABLES: how many the file had. */
static int open_identify(struct sq_store *sq, int64_t *tables, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_open_v2(
        sq->path, &sq->wdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "opened", err, errlen);
    }
    sqlite3_extended_result_codes(sq->wdb, 0);
    if (sqlite3_db_readonly(sq->wdb, "main") == 1) {
        sq_errf(err, errlen, "%s is read-only; refusing to start on it", sq->path);
        return STORE_E_UNWRITABLE;
    }
    sqlite3_busy_timeout(sq->wdb, 5000);
    /* Reading the schema reads the header: a file that is not a database fails here. */
    int64_t app_id = 0;
    *tables = 0;
    rc = sqlite3_prepare_v2(sq->wdb, "SELECT count(*) FROM sqlite_schema", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        *tables = sqlite3_column_int64(s, 0);
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "read", err, errlen);
    }
    if (*tables == 0) {
        /* A new file: auto_vacuum only takes before the first table is made. */
        char sql[128];
        snprintf(sql, sizeof sql, "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA application_id = %d",
                 SQ_APP_ID);
        rc = exec_all(sq->wdb, sql);
        if (rc != SQLITE_OK) {
            return open_fail(sq, rc, "set up", err, errlen);
        }
        return 0;
    }
    rc = sqlite3_prepare_v2(sq->wdb, "PRAGMA application_id", -1, &s, NULL);
    if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
        app_id = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    if (app_id != SQ_APP_ID) {
        sq_errf(err, errlen,
                "%s is an SQLite database but not a batchd store; refusing to start on it",
                sq->path);
        return STORE_E_CORRUPT;
    }
    return 0;
}

/* WAL, synchronous=FULL and the rest of the write connection's settings (see store_sqlite.c). */
static int open_pragmas(struct sq_store *sq, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(sq->wdb, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        const unsigned char *mode = sqlite3_column_text(s, 0);
        if (rc == SQLITE_ROW && (mode == NULL || strcmp((const char *)mode, "wal") != 0)) {
            sqlite3_finalize(s);
            sq_errf(err, errlen, "%s: WAL mode cannot be set (file system without shared memory?)",
                    sq->path);
            return STORE_E_UNWRITABLE;
        }
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "put in WAL mode", err, errlen);
    }
    rc = exec_all(sq->wdb, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 4194304;"
                           "PRAGMA secure_delete = OFF; PRAGMA foreign_keys = OFF;");
    if (rc == SQLITE_OK) {
        rc = sqlite3_wal_autocheckpoint(sq->wdb, 0);
    }
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "set up", err, errlen);
    }
    return 0;
}

/* Refuses a file (of at most QUICK_CHECK_MAX bytes) that fails quick_check. */
static int open_quick_check(struct sq_store *sq, char *err, size_t errlen)
{
    struct stat fst;
    if (stat(sq->path, &fst) != 0 || fst.st_size > QUICK_CHECK_MAX) {
        return 0;
    }
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(sq->wdb, "PRAGMA quick_check(1)", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        const unsigned char *res = sqlite3_column_text(s, 0);
        if (rc == SQLITE_ROW && (res == NULL || strcmp((const char *)res, "ok") != 0)) {
            sq_errf(err, errlen,
                    "%s is damaged (quick_check: %s); refusing to start on it: move it away to "
                    "start empty, or restore it",
                    sq->path, res != NULL ? (const char *)res : "?");
            sqlite3_finalize(s);
            return STORE_E_CORRUPT;
        }
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "checked", err, errlen);
    }
    return 0;
}

/* Makes the tables, commits the probe write (a store that cannot commit refuses to start)
 * and reads the stored bytes. */
static int open_schema(struct sq_store *sq, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE; INSERT OR REPLACE INTO meta VALUES ('schema', %d);"
             " INSERT OR REPLACE INTO meta VALUES ('opened_ms', %lld); COMMIT",
             SQ_SCHEMA_VERSION, (long long)sq_now(sq));
    int rc = exec_all(sq->wdb, sq_schema);
    if (rc == SQLITE_OK) {
        /* The probe write: a store that cannot commit refuses to start. */
        rc = exec_all(sq->wdb, sql);
    }
    if (rc != SQLITE_OK) {
        int code = open_fail(sq, rc, "written", err, errlen);
        if (!sqlite3_get_autocommit(sq->wdb)) {
            exec_all(sq->wdb, "ROLLBACK");
        }
        return code;
    }
    rc = sqlite3_prepare_v2(sq->wdb, "SELECT coalesce(sum(bytes), 0) FROM batches", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        sq->total_bytes = sqlite3_column_int64(s, 0);
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "read", err, errlen);
    }
    return 0;
}

/* Prepares the writer's statements, then opens the read-only connection and its own. */
static int open_statements(struct sq_store *sq, char *err, size_t errlen)
{
    int rc = SQLITE_OK;
    for (int i = 0; i < W_COUNT; i++) {
        rc =
            sqlite3_prepare_v3(sq->wdb, wst_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->w[i], NULL);
        if (rc != SQLITE_OK) {
            return open_fail(sq, rc, "prepared", err, errlen);
        }
    }
    rc = sqlite3_open_v2(sq->path, &sq->rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(sq->rdb, 0);
        /* A reader in WAL never waits for the writer; a short wait covers WAL recovery. */
        sqlite3_busy_timeout(sq->rdb, 100);
        rc = exec_all(sq->rdb, "PRAGMA query_only = ON");
    }
    for (int i = 0; rc == SQLITE_OK && i < R_COUNT; i++) {
        rc =
            sqlite3_prepare_v3(sq->rdb, rst_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->r[i], NULL);
    }
    if (rc != SQLITE_OK) {
        sq_errf(err, errlen, "%s cannot be opened for reading (%s)", sq->path,
                sq->rdb != NULL ? sqlite3_errmsg(sq->rdb) : sqlite3_errstr(rc));
        return sq_rc(rc);
    }
    return 0;
}

/* Sets the connection up and checks the file: ours, intact, writable. */
int sq_open_db(struct sq_store *sq, char *err, size_t errlen)
{
    int64_t tables = 0;
    int rc = open_identify(sq, &tables, err, errlen);
    if (rc == 0) {
        rc = open_pragmas(sq, err, errlen);
    }
    if (rc == 0 && tables > 0) {
        rc = open_quick_check(sq, err, errlen);
    }
    if (rc == 0) {
        rc = open_schema(sq, err, errlen);
    }
    if (rc == 0) {
        rc = open_statements(sq, err, errlen);
    }
    return rc;
}
