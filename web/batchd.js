// batchd.js: a small client for batchd's HTTP API, for browsers (and anything with fetch).
// No dependencies; copy it into your own page. The web console (GET /) is built on it.
//
//   import { Client } from './batchd.js';
//   const c = new Client({ base: 'http://127.0.0.1:8080', token: 'secret-or-null' });
//   const summary = await c.stream({ op: 'sqrt', inputs: [1, 4, 9] }, {
//     onLine: (line) => console.log(line.index, line.result ?? line.error),
//   });
//
// - stream(): POST /v1/batches, results read as they arrive (fetch + ReadableStream, NDJSON).
// - upload(): the same for multipart/form-data (image files), with upload progress (XHR:
//   fetch cannot report upload progress, nor stream a request body over HTTP/1.1).
// - events(): Server-Sent Events read over fetch, so an Authorization header can be sent
//   (EventSource cannot), with reconnection and Last-Event-ID (stored batches, SPEC §8).
// - fetchBlob(): a batch re-run for a download (Accept: NDJSON, JSON or tar).
// - ops(), metrics() (Prometheus text parsed), info(), capabilities(); for stored batches:
//   submitAsync(), status(), list(), cancel().
// Cancel anything by aborting its AbortSignal: the server cancels a streamed batch when its
// client disconnects.

/** An HTTP error answer of batchd: status, and the body's error code, message and path. */
export class BatchdError extends Error {
  constructor(status, error, requestId) {
    const e = error || {};
    super(e.message || `HTTP ${status}`);
    this.name = 'BatchdError';
    this.status = status;
    this.code = e.code || `http_${status}`;
    this.path = e.path;
    this.requestId = requestId;
  }
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    body = null;
  }
  return new BatchdError(resp.status, body && body.error, resp.headers.get('X-Request-Id'));
}

/**
 * Splits a stream of bytes into lines and calls onLine with each (without its newline).
 * Returns when the stream ends; a last line without a newline is passed too.
 */
export async function readLines(body, onLine) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let rest = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += decoder.decode(value, { stream: true });
    let start = 0;
    for (let nl = rest.indexOf('\n'); nl >= 0; nl = rest.indexOf('\n', start)) {
      onLine(rest.slice(start, nl));
      start = nl + 1;
    }
    rest = rest.slice(start);
  }
  rest += decoder.decode();
  if (rest !== '') onLine(rest);
}

/**
 * Parses Prometheus text exposition into { name: [{ labels: {k: v}, value }] }.
 */
export function parsePrometheus(text) {
  const out = {};
  const re = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/;
  const lre = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#') continue;
    const m = re.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const l of m[3].matchAll(lre)) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    }
    (out[m[1]] ||= []).push({ labels, value: Number(m[4]) });
  }
  return out;
}

/** The value of metric NAME whose labels include LABELS (0 when absent). */
export function metricValue(metrics, name, labels = {}) {
  for (const s of metrics[name] || []) {
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
  }
  return 0;
}

/** Parses one NDJSON result line; null for a blank or unparsable one. */
function parseLine(text) {
  if (text.trim() === '') return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}

export class Client {
  /**
   * base: the server's URL ('' = this page's origin); token: a bearer token or null.
   */
  constructor({ base = '', token = null } = {}) {
    this.base = base.replace(/\/$/, '');
    this.token = token;
  }

  headers(extra = {}) {
    const h = { ...extra };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  async request(path, { method = 'GET', headers = {}, body, signal } = {}) {
    const resp = await fetch(this.base + path, {
      method,
      headers: this.headers(headers),
      body,
      signal,
      cache: 'no-store',
    });
    if (!resp.ok && resp.status !== 202) throw await errorOf(resp);
    return resp;
  }

  async json(path, opts) {
    return (await this.request(path, opts)).json();
  }

  /** GET /v1/ops: the catalogue. */
  ops(opts) {
    return this.json('/v1/ops', opts);
  }

  /** GET /metrics, parsed (see parsePrometheus). */
  async metrics(opts) {
    return parsePrometheus(await (await this.request('/metrics', opts)).text());
  }

  /** GET /web/server.json: { auth: "bearer" | null } (served without a token). */
  async info() {
    const resp = await fetch(this.base + '/web/server.json', { cache: 'no-store' });
    return resp.ok ? resp.json() : { auth: null };
  }

  /**
   * What this server offers, learnt without an error answer: OPTIONS /v1/batches (open
   * to all) lists its methods; GET there means stored batches (SPEC §8).
   */
  async capabilities() {
    try {
      const resp = await fetch(this.base + '/v1/batches', { method: 'OPTIONS', cache: 'no-store' });
      const allow = (resp.headers.get('Allow') || '').split(',').map((s) => s.trim());
      return { stored: allow.includes('GET') };
    } catch (_) {
      return { stored: false };
    }
  }

  /**
   * POSTs BATCH (an object, or a JSON string) and calls onLine(obj, text) for each NDJSON
   * line as it arrives (TEXT: the line as sent, where 2.0 is still 2.0). Resolves with { summary, requestId, batchUrl } (summary null when the
   * stream was cut off); rejects with a BatchdError for a refused batch, or an AbortError.
   */
  async stream(batch, { onLine = () => {}, onResponse, signal, headers = {} } = {}) {
    const body = typeof batch === 'string' ? batch : JSON.stringify(batch);
    const resp = await this.request('/v1/batches', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/x-ndjson', ...headers },
      body,
      signal,
    });
    if (onResponse) onResponse(resp);
    if (resp.status === 202) {
      return { summary: null, accepted: await resp.json(), requestId: resp.headers.get('X-Request-Id') };
    }
    let summary = null;
    await readLines(resp.body, (text) => {
      const line = parseLine(text);
      if (line === null) return;
      if (line.summary) summary = line.summary;
      onLine(line, text);
    });
    return {
      summary,
      requestId: resp.headers.get('X-Request-Id'),
      batchUrl: resp.headers.get('Content-Location'),
    };
  }

  /**
   * POSTs FORM (a FormData: a "batch" part, then "file" parts) with XMLHttpRequest, so that
   * onUploadProgress(loaded, total) can follow the upload; the NDJSON answer is parsed as it
   * arrives (onLine). Returns { promise, abort }; the promise resolves as stream() does.
   */
  upload(form, { onLine = () => {}, onUploadProgress = () => {}, headers = {} } = {}) {
    const xhr = new XMLHttpRequest();
    let seen = 0;
    let summary = null;
    const drain = (final) => {
      const text = xhr.responseText;
      let start = seen;
      for (let nl = text.indexOf('\n', start); nl >= 0; nl = text.indexOf('\n', start)) {
        const raw = text.slice(start, nl);
        const line = parseLine(raw);
        start = nl + 1;
        if (line === null) continue;
        if (line.summary) summary = line.summary;
        onLine(line, raw);
      }
      seen = start;
      if (final && seen < text.length) {
        const raw = text.slice(seen);
        const line = parseLine(raw);
        seen = text.length;
        if (line !== null) {
          if (line.summary) summary = line.summary;
          onLine(line, raw);
        }
      }
    };
    const promise = new Promise((resolve, reject) => {
      xhr.open('POST', this.base + '/v1/batches');
      for (const [k, v] of Object.entries(this.headers({ Accept: 'application/x-ndjson', ...headers }))) {
        xhr.setRequestHeader(k, v);
      }
      const progress = (e) => onUploadProgress(e.loaded, e.lengthComputable ? e.total : 0);
      xhr.upload.onprogress = progress;
      xhr.upload.onload = progress; // the upload's end: loaded = total
      xhr.onprogress = () => {
        if (xhr.status === 200) drain(false);
      };
      xhr.onload = () => {
        if (xhr.status === 200) {
          drain(true);
          resolve({ summary, requestId: xhr.getResponseHeader('X-Request-Id') });
          return;
        }
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (_) {
          body = null;
        }
        if (xhr.status === 202) {
          resolve({ summary: null, accepted: body, requestId: xhr.getResponseHeader('X-Request-Id') });
          return;
        }
        reject(new BatchdError(xhr.status, body && body.error, xhr.getResponseHeader('X-Request-Id')));
      };
      xhr.onerror = () => reject(new TypeError('network error'));
      xhr.onabort = () => reject(new DOMException('aborted', 'AbortError'));
      xhr.send(form);
    });
    return { promise, abort: () => xhr.abort() };
  }

  /**
   * Runs BATCH again (an object, a JSON string or a FormData) with the given Accept
   * (application/x-ndjson, application/json, application/x-tar) and returns the whole
   * answer as a Blob, for a download.
   */
  async fetchBlob(batch, accept, { signal } = {}) {
    const isForm = typeof FormData !== 'undefined' && batch instanceof FormData;
    const headers = { Accept: accept };
    if (!isForm) headers['Content-Type'] = 'application/json';
    const body = isForm || typeof batch === 'string' ? batch : JSON.stringify(batch);
    const resp = await this.request('/v1/batches', { method: 'POST', headers, body, signal });
    return resp.blob();
  }

  /**
   * Reads Server-Sent Events from PATH over fetch, calling onEvent({ id, event, data, text })
   * for each (data parsed as JSON when it is JSON; text: as sent, where 2.0 is still 2.0).
   * batchd's results stream (SPEC §8) sends "result" and "summary" events with an id (the
   * line's seq) and "progress" events without one (they do not move Last-Event-ID). After
   * a dropped connection or a server restart it reconnects by itself (after the server's
   * retry: or 1 s, growing to 10 s), sending Last-Event-ID so that no event is lost or
   * repeated. It ends when an event named
   * by stopOn ("summary") arrives, on a 4xx answer (rejects with a BatchdError), or when
   * SIGNAL aborts. onState(state) hears "open", "retrying" and "closed".
   */
  async events(path, { onEvent = () => {}, onState = () => {}, lastEventId = null, signal, stopOn = 'summary' } = {}) {
    let last = lastEventId;
    let retry = 1000;
    let failures = 0;
    for (;;) {
      let ended = false;
      try {
        const headers = { Accept: 'text/event-stream' };
        if (last !== null) headers['Last-Event-ID'] = String(last);
        const resp = await fetch(this.base + path, { headers: this.headers(headers), signal, cache: 'no-store' });
        if (resp.status >= 400 && resp.status < 500) throw await errorOf(resp);
        if (!resp.ok) throw new TypeError(`HTTP ${resp.status}`);
        onState('open');
        failures = 0;
        let ev = { id: null, event: 'message', data: [] };
        await readLines(resp.body, (raw) => {
          const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
          if (line === '') {
            if (ev.data.length > 0) {
              const text = ev.data.join('\n');
              let data = text;
              try {
                data = JSON.parse(text);
              } catch (_) {
                data = text;
              }
              if (ev.id !== null) last = ev.id;
              onEvent({ id: ev.id, event: ev.event, data, text });
              if (ev.event === stopOn) ended = true;
            }
            ev = { id: null, event: 'message', data: [] };
            return;
          }
          if (line[0] === ':') return;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value[0] === ' ') value = value.slice(1);
          if (field === 'data') ev.data.push(value);
          else if (field === 'event') ev.event = value;
          else if (field === 'id') ev.id = value;
          else if (field === 'retry' && /^\d+$/.test(value)) retry = Number(value);
        });
      } catch (e) {
        if (e.name === 'AbortError' || e instanceof BatchdError) {
          onState('closed');
          throw e;
        }
        failures += 1;
      }
      if (ended) {
        onState('closed');
        return last;
      }
      onState('retrying');
      const wait = Math.min(10000, retry * Math.max(1, failures));
      await new Promise((resolve, reject) => {
        const t = setTimeout(resolve, wait);
        if (signal) {
          signal.addEventListener('abort', () => {
            clearTimeout(t);
            reject(new DOMException('aborted', 'AbortError'));
          }, { once: true });
        }
      });
    }
  }

  // ---------------------------------------------------------------- stored batches (§8)

  /** POSTs BATCH with Prefer: respond-async; resolves with the status document (202). */
  async submitAsync(batch, opts = {}) {
    const body = typeof batch === 'string' ? batch : JSON.stringify(batch);
    const resp = await this.request('/v1/batches', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Prefer: 'respond-async' },
      body,
      signal: opts.signal,
    });
    if (resp.status !== 202) throw new BatchdError(resp.status, { code: 'not_async', message: 'the server streamed the batch instead of storing it' });
    return resp.json();
  }

  status(id, opts) {
    return this.json(`/v1/batches/${encodeURIComponent(id)}`, opts);
  }

  /**
   * GET /v1/batches: { batches: [status documents, newest first], next: the URL of the
   * older ones, or null }. BEFORE: an id, to list the batches older than it.
   */
  list({ limit = 50, state, before } = {}, opts) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (state) q.set('state', state);
    if (before) q.set('before', before);
    return this.json(`/v1/batches?${q}`, opts);
  }

  /**
   * DELETE /v1/batches/{id}: cancels a queued or running batch and resolves with its final
   * status document (once the cancel is recorded); on an ended batch it forgets it (null).
   */
  async cancel(id, opts) {
    const resp = await this.request(`/v1/batches/${encodeURIComponent(id)}`, { method: 'DELETE', ...opts });
    return resp.status === 204 ? null : resp.json();
  }

  /** Follows a stored batch's results live (SSE); see events(). */
  follow(id, opts) {
    return this.events(`/v1/batches/${encodeURIComponent(id)}/results?follow=true`, opts);
  }

  /** A stored batch's results in one form (Accept), as a Blob. */
  async resultsBlob(id, accept, opts = {}) {
    const resp = await this.request(`/v1/batches/${encodeURIComponent(id)}/results`, {
      headers: { Accept: accept },
      signal: opts.signal,
    });
    return resp.blob();
  }
}
