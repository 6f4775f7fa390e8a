/* The Redis store's Lua scripts: each write that must be atomic is one script, so that a
 * replica that dies halfway leaves nothing half done, and the exactly-once gate (SETBIT on
 * the job's bit, then the result) cannot be raced by another replica. Keys are built from
 * the batch id inside the scripts (a standalone Redis; every key of a batch has the hash tag
 * {ID} should Redis Cluster be wanted). Loaded with SCRIPT LOAD on every (re)connect. */
#include "redis_internal.h"

#define LUA(...) #__VA_ARGS__

/* Lua inside: clang-format would break lines before a '#', which would make it a directive. */
/* clang-format off */
/* ARGV: id owner op rid njobs now chunk queue local key fp max_bytes spec ninputs inputs...
 * -> {0, id} created, {1, id} replayed, {-1, id} key reused, {-2, ""} full. Sent again after
 * a lost reply (RS_RETRY): a batch ID that exists is this create's own, run before. */
static const char create_lua[] = LUA(
    local id = ARGV[1] local owner = ARGV[2] local key = ARGV[10]
    if redis.call('EXISTS', 'batchd:{' .. id .. '}:meta') == 1 then return {0, id} end
    local kk = false
    if key ~= '' then
        kk = 'batchd:key:' .. owner .. ':' .. key
        local old = redis.call('GET', kk)
        if old then
            local fp = redis.call('HGET', 'batchd:{' .. old .. '}:meta', 'fp')
            if fp then
                if fp == ARGV[11] then return {1, old} end
                return {-1, old}
            end
        end
    end
    local nin = tonumber(ARGV[14])
    local size = #ARGV[13]
    for i = 1, nin do size = size + #ARGV[14 + i] end
    local maxb = tonumber(ARGV[12])
    local cur = tonumber(redis.call('GET', 'batchd:bytes') or '0')
    if maxb > 0 and cur + size > maxb then return {-2, ''} end
    local p = 'batchd:{' .. id .. '}:'
    redis.call('HSET', p .. 'meta', 'owner', owner, 'op', ARGV[3], 'rid', ARGV[4], 'njobs', ARGV[5],
               'created', ARGV[6], 'started', 0, 'finished', 0, 'expires', 0, 'state', 0,
               'cancel', 0, 'nok', 0, 'nfailed', 0, 'seq', 0, 'busy_us', 0, 'chunk', ARGV[7],
               'ninputs', nin, 'bytes', size, 'queue', ARGV[8], 'local', ARGV[9], 'summary', '',
               'key', key, 'fp', ARGV[11])
    redis.call('SET', p .. 'spec', ARGV[13])
    for i = 1, nin do redis.call('HSET', p .. 'in', i - 1, ARGV[14 + i]) end
    redis.call('INCRBY', 'batchd:bytes', size)
    redis.call('HINCRBY', 'batchd:states', 0, 1)
    redis.call('ZADD', 'batchd:by:' .. owner, 0, id)
    if kk then redis.call('SET', kk, id) end
    redis.call('SADD', 'batchd:unf', id)
    local njobs = tonumber(ARGV[5])
    if ARGV[8] == '1' then
        redis.call('XGROUP', 'CREATE', p .. 'q', 'w', '0', 'MKSTREAM')
        local c = tonumber(ARGV[7])
        local f = 0
        if njobs == 0 then redis.call('XADD', p .. 'q', '*', 'f', 0, 't', 0) end
        while f < njobs do
            local t = math.min(f + c, njobs)
            redis.call('XADD', p .. 'q', '*', 'f', f, 't', t)
            f = t
        end
        redis.call('RPUSH', 'batchd:active', id)
    else
        redis.call('SADD', 'batchd:local:' .. ARGV[9], id)
        redis.call('SADD', p .. 'ran', ARGV[9])
    end
    return {0, id}
);

/* ARGV: id now [index ok line]... -> {recorded, duplicates, last seq, state}. The bit of a
 * job is its gate: set once, whoever comes second (a chunk run twice) records nothing. */
static const char record_lua[] = LUA(
    local p = 'batchd:{' .. ARGV[1] .. '}:'
    local m = p .. 'meta'
    local st = redis.call('HGET', m, 'state')
    if not st then return {0, 0, 0, -1} end
    st = tonumber(st)
    local seq = tonumber(redis.call('HGET', m, 'seq'))
    if st >= 2 then return {0, (#ARGV - 2) / 3, seq, st} end
    if st == 0 then
        redis.call('HSET', m, 'state', 1, 'started', ARGV[2])
        redis.call('HINCRBY', 'batchd:states', 0, -1)
        redis.call('HINCRBY', 'batchd:states', 1, 1)
    end
    local rec, dup, nok, nf, bytes = 0, 0, 0, 0, 0
    for i = 3, #ARGV, 3 do
        if redis.call('SETBIT', p .. 'bits', tonumber(ARGV[i]), 1) == 1 then
            dup = dup + 1
        else
            seq = seq + 1
            redis.call('HSET', p .. 'res', ARGV[i], seq .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2])
            redis.call('RPUSH', p .. 'order', ARGV[i])
            if ARGV[i + 1] == '1' then nok = nok + 1 else nf = nf + 1 end
            bytes = bytes + #ARGV[i + 2] + 24
            rec = rec + 1
        end
    end
    if rec > 0 then
        redis.call('HSET', m, 'seq', seq)
        redis.call('HINCRBY', m, 'nok', nok)
        redis.call('HINCRBY', m, 'nfailed', nf)
        redis.call('HINCRBY', m, 'bytes', bytes)
        redis.call('INCRBY', 'batchd:bytes', bytes)
    end
    return {rec, dup, seq, 1}
);

/* ARGV: id busy_us -> {njobs, nok, nfailed, state, cancel, created, rid, busy_us} or {}. */
static const char finish_lua[] = LUA(
    local m = 'batchd:{' .. ARGV[1] .. '}:meta'
    if redis.call('EXISTS', m) == 0 then return {} end
    redis.call('HINCRBY', m, 'busy_us', ARGV[2])
    return redis.call('HMGET', m, 'njobs', 'nok', 'nfailed', 'state', 'cancel', 'created', 'rid',
                      'busy_us')
);

/* ARGV: id state summary now ttl -> 1 ended now, 0 ended before, -1 no such batch. */
static const char end_lua[] = LUA(
    local id = ARGV[1]
    local p = 'batchd:{' .. id .. '}:'
    local m = p .. 'meta'
    local st = redis.call('HGET', m, 'state')
    if not st then return -1 end
    st = tonumber(st)
    if st >= 2 then return 0 end
    local now = tonumber(ARGV[4])
    local exp = now + tonumber(ARGV[5])
    redis.call('HSET', m, 'state', ARGV[2], 'summary', ARGV[3], 'finished', now, 'expires', exp)
    if redis.call('HGET', m, 'started') == '0' then redis.call('HSET', m, 'started', now) end
    redis.call('HINCRBY', m, 'bytes', #ARGV[3])
    redis.call('INCRBY', 'batchd:bytes', #ARGV[3])
    redis.call('HINCRBY', 'batchd:states', st, -1)
    redis.call('HINCRBY', 'batchd:states', ARGV[2], 1)
    redis.call('LREM', 'batchd:active', 0, id)
    redis.call('SREM', 'batchd:unf', id)
    redis.call('SREM', 'batchd:local:' .. redis.call('HGET', m, 'local'), id)
    redis.call('ZADD', 'batchd:ended', exp, id)
    redis.call('ZADD', 'batchd:recent', now, id)
    redis.call('DEL', p .. 'q')
    return 1
);

/* ARGV: id owner ('*': any) -> 1 recorded, -1 not found, -2 ended. */
static const char cancel_lua[] = LUA(
    local m = 'batchd:{' .. ARGV[1] .. '}:meta'
    local v = redis.call('HMGET', m, 'owner', 'state')
    if not v[1] or (ARGV[2] ~= '*' and v[1] ~= ARGV[2]) then return -1 end
    if tonumber(v[2]) >= 2 then return -2 end
    redis.call('HSET', m, 'cancel', 1)
    return 1
);

/* ARGV: id now -> 1 (queued -> running) or 0. */
static const char start_lua[] = LUA(
    local m = 'batchd:{' .. ARGV[1] .. '}:meta'
    if redis.call('HGET', m, 'state') ~= '0' then return 0 end
    redis.call('HSET', m, 'state', 1, 'started', ARGV[2])
    redis.call('HINCRBY', 'batchd:states', 0, -1)
    redis.call('HINCRBY', 'batchd:states', 1, 1)
    return 1
);

/* ARGV: id owner ('*': any) -> 1 forgotten, -1 not found, -2 not finished. */
static const char forget_lua[] = LUA(
    local id = ARGV[1]
    local p = 'batchd:{' .. id .. '}:'
    local m = p .. 'meta'
    local v = redis.call('HMGET', m, 'owner', 'state', 'bytes', 'key')
    if not v[1] or (ARGV[2] ~= '*' and v[1] ~= ARGV[2]) then return -1 end
    local st = tonumber(v[2])
    if st == 4 then return -1 end
    if st < 2 then return -2 end
    redis.call('DEL', m, p .. 'spec', p .. 'in', p .. 'bits', p .. 'res', p .. 'order', p .. 'q',
               p .. 'ran')
    redis.call('ZREM', 'batchd:by:' .. v[1], id)
    if v[4] and v[4] ~= '' then
        local kk = 'batchd:key:' .. v[1] .. ':' .. v[4]
        if redis.call('GET', kk) == id then redis.call('DEL', kk) end
    end
    redis.call('DECRBY', 'batchd:bytes', tonumber(v[3]))
    redis.call('HINCRBY', 'batchd:states', st, -1)
    redis.call('ZREM', 'batchd:ended', id)
    return 1
);

/* ARGV: now ttl -> batches expired (at most 64 a call): data deleted, a tombstone for TTL. */
static const char expire_lua[] = LUA(
    local now = tonumber(ARGV[1])
    local ids = redis.call('ZRANGEBYSCORE', 'batchd:ended', '-inf', now, 'LIMIT', 0, 64)
    for _, id in ipairs(ids) do
        local p = 'batchd:{' .. id .. '}:'
        local m = p .. 'meta'
        local v = redis.call('HMGET', m, 'owner', 'state', 'bytes', 'key')
        if v[1] then
            redis.call('DEL', p .. 'spec', p .. 'in', p .. 'bits', p .. 'res', p .. 'order',
                       p .. 'q', p .. 'ran')
            if v[4] and v[4] ~= '' then
                local kk = 'batchd:key:' .. v[1] .. ':' .. v[4]
                if redis.call('GET', kk) == id then redis.call('DEL', kk) end
            end
            redis.call('DECRBY', 'batchd:bytes', tonumber(v[3]))
            redis.call('HINCRBY', 'batchd:states', tonumber(v[2]), -1)
            redis.call('HINCRBY', 'batchd:states', 4, 1)
            redis.call('HSET', m, 'state', 4, 'summary', '', 'bytes', 0)
            redis.call('PEXPIREAT', m, now + tonumber(ARGV[2]))
            redis.call('ZREM', 'batchd:by:' .. v[1], id)
        end
        redis.call('ZREM', 'batchd:ended', id)
    end
    return #ids
);

/* ARGV: consumer replica min_idle_ms max -> {{id, entry, from, to, reclaimed, cancel, njobs,
 * bits, created}...}: one chunk per batch per turn over the active batches (fair over the cluster),
 * first a chunk idle past the claim timeout (its replica is gone), else a new one. */
static const char claim_lua[] = LUA(
    local out = {}
    local max = tonumber(ARGV[4])
    local n = redis.call('LLEN', 'batchd:active')
    local tries = math.min(n * max, 256)
    local i = 0
    while i < tries and #out < max do
        i = i + 1
        local id = redis.call('LMOVE', 'batchd:active', 'batchd:active', 'LEFT', 'RIGHT')
        if not id then break end
        local p = 'batchd:{' .. id .. '}:'
        local v = redis.call('HMGET', p .. 'meta', 'state', 'cancel', 'njobs', 'created')
        if not v[1] or tonumber(v[1]) >= 2 then
            redis.call('LREM', 'batchd:active', 0, id)
        else
            local e, re = false, 0
            local ok, pend = pcall(redis.call, 'XPENDING', p .. 'q', 'w', 'IDLE', ARGV[3], '-', '+', 1)
            if ok and type(pend) == 'table' and #pend > 0 then
                local c = redis.call('XCLAIM', p .. 'q', 'w', ARGV[1], ARGV[3], pend[1][1])
                if type(c) == 'table' and type(c[1]) == 'table' then e = c[1] re = 1 end
            end
            if not e then
                local ok2, r = pcall(redis.call, 'XREADGROUP', 'GROUP', 'w', ARGV[1], 'COUNT', 1,
                                     'STREAMS', p .. 'q', '>')
                if ok2 and type(r) == 'table' and type(r[1]) == 'table' and #r[1][2] > 0 then
                    e = r[1][2][1]
                end
            end
            if e then
                local f = tonumber(e[2][2])
                local t = tonumber(e[2][4])
                local bits = ''
                if t > f then
                    bits = redis.call('GETRANGE', p .. 'bits', math.floor(f / 8), math.floor((t - 1) / 8))
                end
                redis.call('SADD', p .. 'ran', ARGV[2])
                out[#out + 1] = {id, e[1], f, t, re, tonumber(v[2]), tonumber(v[3]), bits,
                                 tonumber(v[4])}
            end
        end
    end
    return out
);

/* ARGV: consumer [id entry]... -> {lost, cancel}... : a heartbeat for the chunks this replica
 * runs (their idle time starts again), unless another replica has taken one over. */
static const char touch_lua[] = LUA(
    local out = {}
    for i = 2, #ARGV, 2 do
        local p = 'batchd:{' .. ARGV[i] .. '}:'
        local lost = 1
        local ok, pend = pcall(redis.call, 'XPENDING', p .. 'q', 'w', ARGV[i + 1], ARGV[i + 1], 1)
        if ok and type(pend) == 'table' and #pend > 0 and pend[1][2] == ARGV[1] then
            redis.call('XCLAIM', p .. 'q', 'w', ARGV[1], 0, ARGV[i + 1], 'JUSTID')
            lost = 0
        end
        out[#out + 1] = lost
        out[#out + 1] = tonumber(redis.call('HGET', p .. 'meta', 'cancel') or '0')
    end
    return out
);

/* ARGV: now -> {id, seq, state, cancel}... of the unfinished batches and those ended in the
 * last 30 s: what every replica's followers and cancels watch. */
static const char poll_lua[] = LUA(
    local now = tonumber(ARGV[1])
    redis.call('ZREMRANGEBYSCORE', 'batchd:recent', '-inf', now - 60000)
    local ids = redis.call('SMEMBERS', 'batchd:unf')
    local recent = redis.call('ZRANGEBYSCORE', 'batchd:recent', now - 30000, '+inf')
    for _, id in ipairs(recent) do ids[#ids + 1] = id end
    local out = {}
    for _, id in ipairs(ids) do
        local v = redis.call('HMGET', 'batchd:{' .. id .. '}:meta', 'seq', 'state', 'cancel')
        if v[1] then
            out[#out + 1] = {id, tonumber(v[1]), tonumber(v[2]), tonumber(v[3])}
        end
    end
    return out
);

/* ARGV: id entry: the chunk ran; no replica runs it again. */
static const char ack_lua[] = LUA(
    local q = 'batchd:{' .. ARGV[1] .. '}:q'
    pcall(redis.call, 'XACK', q, 'w', ARGV[2])
    pcall(redis.call, 'XDEL', q, ARGV[2])
    return 1
);

/* ARGV: id kind ('s' by seq, 'i' by index, 'n' the status only) from max bytes -> {meta as HGETALL, ran sorted,
 * the scan's end (kind 'i'), index, value, ...}: a page of results with the batch's status,
 * in one round trip (read ahead, redis_prefetch.c). {{}} when there is no such batch. */
static const char page_lua[] = LUA(
    local p = 'batchd:{' .. ARGV[1] .. '}:'
    local m = redis.call('HGETALL', p .. 'meta')
    if #m == 0 then return {m} end
    local ran = redis.call('SMEMBERS', p .. 'ran')
    table.sort(ran)
    local out = {m, ran, 0}
    local from, max, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
    local bytes = 0
    if ARGV[2] == 'n' then
        return out
    elseif ARGV[2] == 's' then
        local ix = redis.call('LRANGE', p .. 'order', from, from + max - 1)
        if #ix > 0 then
            local vs = redis.call('HMGET', p .. 'res', unpack(ix))
            for k, i in ipairs(ix) do
                if vs[k] then
                    out[#out + 1] = i
                    out[#out + 1] = vs[k]
                    bytes = bytes + #vs[k]
                end
                if bytes >= budget then break end
            end
        end
    else
        local njobs = tonumber(redis.call('HGET', p .. 'meta', 'njobs') or '0')
        local i = from
        local stop = math.min(njobs, from + 2048)
        local n = 0
        while i < stop and n < max and bytes < budget do
            local v = redis.call('HGET', p .. 'res', tostring(i))
            if v then
                out[#out + 1] = tostring(i)
                out[#out + 1] = v
                n = n + 1
                bytes = bytes + #v
            end
            i = i + 1
        end
        out[3] = i
    end
    return out
);

/* clang-format on */

const char *const rs_scripts[RS_NSCRIPTS] = {
    [RS_S_CREATE] = create_lua, [RS_S_RECORD] = record_lua, [RS_S_FINISH] = finish_lua,
    [RS_S_END] = end_lua,       [RS_S_CANCEL] = cancel_lua, [RS_S_START] = start_lua,
    [RS_S_FORGET] = forget_lua, [RS_S_EXPIRE] = expire_lua, [RS_S_CLAIM] = claim_lua,
    [RS_S_TOUCH] = touch_lua,   [RS_S_POLL] = poll_lua,     [RS_S_ACK] = ack_lua,
    [RS_S_PAGE] = page_lua,
};
