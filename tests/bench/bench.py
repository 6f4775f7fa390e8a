#!/usr/bin/python3
"""batchd vs its peers, side by side (driven by tests/bench/run.sh; see README.md there).

Two batchd servers (1 and 2 workers) run for the whole benchmark. Every workload runs on
batchd (over HTTP with curl: multipart uploads for images, a JSON body for numbers; the time
is curl's, from the request's start to the last byte of the stream, summary line included)
and on the peers (in this process or its pools, pool start-up and shutdown included), on the
same inputs. Round 0 is a warm-up and is not counted; rounds 1..REPS are, and the medians
are reported. A sampler thread sums the RSS of each batchd's process tree every 20 ms.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Pool

from PIL import Image, ImageFilter
import joblib
from joblib import Parallel, delayed

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_shared():
    # ../shared next to the clone (as CMake's BATCHD_SHARED_DIR); from a worktree further down,
    # the nearest parent that has a shared/peers folder.
    if os.environ.get('BATCHD_SHARED'):
        return os.path.abspath(os.environ['BATCHD_SHARED'])
    d = os.path.abspath(os.path.join(HERE, '..', '..'))
    while d != '/':
        d = os.path.dirname(d)
        if os.path.isdir(os.path.join(d, 'shared', 'peers')):
            return os.path.join(d, 'shared')
    return os.path.abspath(os.path.join(HERE, '..', '..', '..', 'shared'))


SHARED = _find_shared()
PEERS_DIR = os.environ.get('PEERS_DIR', os.path.join(SHARED, 'peers'))
sys.path.insert(0, PEERS_DIR)
import peers  # noqa: E402  (the peers' own intensive_task and image settings)

SQRT_N = 1_000_000
JOBLIB_SQRT_N = peers.JOBLIB_SQRT_N        # 200k: joblib n_jobs=1 is super-linear in tasks
CPU_SMALL_N = 5_000_000                    # the tutorials' intensive_task: range(5_000_000)
CPU_BIG_N = 100_000_000
CPU_JOBS = 8
QUALITY = 85


# ---------------------------------------------------------------- the Pillow peers
def _rgb(img):
    return img if img.mode in ('RGB', 'L') else img.convert('RGB')


def pil_blur_thumb(path, out_dir):
    """The tutorial's work (peers.process_image), saved as JPEG q85 like batchd's output."""
    img = Image.open(path)
    img = img.filter(ImageFilter.GaussianBlur(15))
    img.thumbnail(peers.SIZE)
    _rgb(img).save(os.path.join(out_dir, os.path.basename(path) + '.jpg'), quality=QUALITY)
    return path


def pil_thumb256(path, out_dir):
    img = Image.open(path)
    img.thumbnail((256, 256))          # Pillow drafts JPEGs (DCT scaling), as a user gets it
    _rgb(img).save(os.path.join(out_dir, os.path.basename(path) + '.jpg'), quality=QUALITY)
    return path


def run_pil(fn, peer, workers, photos, out_dir):
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    t = time.perf_counter()
    if peer == 'ppe':
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(fn, photos, [out_dir] * len(photos)))
    else:
        Parallel(n_jobs=workers)(delayed(fn)(p, out_dir) for p in photos)
    dt = time.perf_counter() - t
    assert len(os.listdir(out_dir)) == len(photos)
    return dt


def run_sqrt_peer(peer, workers):
    t = time.perf_counter()
    if peer == 'pool':
        with Pool(workers) as pool:
            r = pool.map(math.sqrt, range(10, 10 + SQRT_N))
        n = SQRT_N
    else:
        n = JOBLIB_SQRT_N
        r = Parallel(n_jobs=workers)(delayed(math.sqrt)(x) for x in range(10, 10 + n))
    dt = time.perf_counter() - t
    assert len(r) == n and r[-1] == math.sqrt(10 + n - 1)
    return dt


def run_intensive_peer(workers):
    t = time.perf_counter()
    with Pool(workers) as pool:
        r = pool.map(peers.intensive_task, range(CPU_JOBS))
    dt = time.perf_counter() - t
    assert r[1] == sum(range(CPU_SMALL_N)) + CPU_SMALL_N
    return dt


# ---------------------------------------------------------------- batchd
def tree_rss_kb(root):
    """VmRSS summed over root and all its descendants (the server and its workers)."""
    children = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(')') + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f'/proc/{pid}/status') as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
        todo.extend(children.get(pid, []))
    return total


class Batchd:
    def __init__(self, binary, workers, tmp):
        self.workers = workers
        self.logpath = os.path.join(tmp, f'batchd-w{workers}.log')
        self.log = open(self.logpath, 'w')
        # A state dir of its own, by environment (a baseline binary without a store ignores
        # it; a flag would be refused).
        env = dict(os.environ, BATCHD_STATE_DIR=tempfile.mkdtemp(prefix='state-', dir=tmp))
        self.proc = subprocess.Popen([binary, '--listen', '127.0.0.1:0', '--workers', str(workers)],
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.port = None
        for _ in range(200):
            with open(self.logpath) as f:
                m = re.search(r'event=listening .*?port=(\d+)', f.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            raise SystemExit(f'batchd did not start: see {self.logpath}')
        self.url = f'http://127.0.0.1:{self.port}/v1/batches'
        self.label = None
        self.peaks = {}
        self._stop = False
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop:
            label = self.label
            if label:
                kb = tree_rss_kb(self.proc.pid)
                if kb > self.peaks.get(label, 0):
                    self.peaks[label] = kb
            time.sleep(0.02)

    def rss_mb(self):
        return tree_rss_kb(self.proc.pid) / 1024

    def stop(self):
        self._stop = True
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def curl(url, args, out, expect_jobs, label_server=None, label=None):
    if label_server is not None:
        label_server.label = label
    try:
        cp = subprocess.run(['curl', '-sS', '--max-time', '300', '-o', out, '-w', '%{http_code} %{time_total}',
                             '-X', 'POST', url] + args, capture_output=True, text=True, check=True)
    finally:
        if label_server is not None:
            label_server.label = None
    code, secs = cp.stdout.split()
    with open(out, 'rb') as f:
        f.seek(max(0, os.path.getsize(out) - 4096))
        last = f.read().splitlines()[-1]
    summ = json.loads(last).get('summary')
    if code != '200' or summ is None or summ['ok'] != expect_jobs:
        raise SystemExit(f'batchd: bad response {code}: {last[:300]!r}')
    return float(secs)


def batchd_json(srv, body_path, njobs, out, label=None):
    return curl(srv.url, ['-H', 'Content-Type: application/json', '--data-binary', '@' + body_path],
                out, njobs, srv, label)


def batchd_images(srv, photos, params, out, label=None):
    args = ['-F', 'batch=' + json.dumps({'op': 'image', 'params': params}) + ';type=application/json']
    for p in photos:
        args += ['-F', 'file=@' + p]
    return curl(srv.url, args, out, len(photos), srv, label)


def wrk_run(srv, secs, script):
    cp = subprocess.run(['wrk', '-t2', '-c64', f'-d{secs}s', '--timeout', '5s', '--latency', '-s', script,
                         srv.url], capture_output=True, text=True, timeout=secs + 30, check=True)
    o = cp.stdout

    def lat(pct):
        m = re.search(rf'^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$', o, re.M)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == 'us' else v * 1000 if u == 's' else v

    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', o).group(1))
    bad = re.search(r'Non-2xx or 3xx responses:\s+(\d+)', o)
    errs = re.search(r'Socket errors:.*', o)
    return {'rps': rps, 'p50': lat(50), 'p99': lat(99), 'non2xx': int(bad.group(1)) if bad else 0,
            'sockerr': errs.group(0) if errs else ''}


# ---------------------------------------------------------------- driver
def med(xs):
    return statistics.median(xs) if xs else float('nan')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', required=True)
    ap.add_argument('--cloop', required=True)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--results', default=os.path.join(HERE, 'results'))
    ap.add_argument('--photos', default=os.environ.get('PHOTOS', os.path.join(SHARED, 'data', 'photos')))
    ap.add_argument('--only', default=os.environ.get('ONLY', 'photos,thumbs,sqrt,cpu,http,memory'))
    ap.add_argument('--wrk-secs', type=int, default=min(20, int(os.environ.get('WRK_SECS', '8'))))
    ap.add_argument('--command', default='tests/bench/run.sh')
    a = ap.parse_args()
    only = set(a.only.split(','))
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix='batchd-bench-', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    photos = sorted(os.path.join(a.photos, f) for f in os.listdir(a.photos)
                    if f.lower().endswith(('.jpg', '.jpeg', '.png')))
    for p in photos:
        with open(p, 'rb') as f:
            f.read()
    W = (1, 2)

    # Inputs, written once, shared by every run.
    sqrt_body = os.path.join(tmp, 'sqrt1m.json')
    with open(sqrt_body, 'w') as f:
        json.dump({'op': 'sqrt', 'inputs': list(range(10, 10 + SQRT_N))}, f, separators=(',', ':'))
    sqrt_small = os.path.join(tmp, 'sqrt200k.json')
    with open(sqrt_small, 'w') as f:
        json.dump({'op': 'sqrt', 'inputs': list(range(10, 10 + JOBLIB_SQRT_N))}, f, separators=(',', ':'))
    cpu_small = os.path.join(tmp, 'cpu5m.json')
    with open(cpu_small, 'w') as f:
        json.dump({'op': 'cpu_loop', 'inputs': [{'n': CPU_SMALL_N, 'x': x} for x in range(CPU_JOBS)]}, f)
    cpu_big = os.path.join(tmp, 'cpu100m.json')
    with open(cpu_big, 'w') as f:
        json.dump({'op': 'cpu_loop', 'inputs': [{'n': CPU_BIG_N, 'x': x} for x in range(CPU_JOBS)]}, f)
    lua = os.path.join(tmp, 'post.lua')
    with open(lua, 'w') as f:
        f.write('wrk.method = "POST"\n'
                'wrk.body = \'{"op":"square","inputs":[1,2,3,4,5,6,7,8,9,10]}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n')
    blur = {'pipeline': [{'op': 'blur', 'sigma': 15}, {'op': 'thumbnail', 'width': 1200, 'height': 1200}],
            'format': 'jpeg', 'quality': QUALITY}
    thumb = {'pipeline': [{'op': 'thumbnail', 'width': 256, 'height': 256}], 'format': 'jpeg',
             'quality': QUALITY}
    out = os.path.join(tmp, 'out')

    servers = {w: Batchd(a.bin, w, tmp) for w in W}
    times = {}      # (workload, system, w) -> [secs]
    http = {}       # w -> [dict]
    mem_after = {w: [] for w in W}
    mem_start = {w: servers[w].rss_mb() for w in W}

    def rec(key, secs, rep):
        print(f'  {key[0]:<8} {key[1]:<26} w{key[2]}  {secs:8.3f} s{"  (warm-up)" if rep == 0 else ""}',
              flush=True)
        if rep > 0:
            times.setdefault(key, []).append(secs)

    try:
        for rep in range(0, a.reps + 1):
            print(f'# round {rep}/{a.reps}{" (warm-up)" if rep == 0 else ""}  {time.strftime("%T")}  '
                  f'load {os.getloadavg()[0]:.2f}', flush=True)
            for w in W:
                s = servers[w]
                if 'photos' in only:
                    rec(('photos', 'batchd', w), batchd_images(s, photos, blur, out, 'photos'), rep)
                    rec(('photos', 'batchd exact', w),
                        batchd_images(s, photos, dict(blur, exact=True), out, 'photos'), rep)
                    rec(('photos', 'ProcessPoolExecutor+Pillow', w),
                        run_pil(pil_blur_thumb, 'ppe', w, photos, os.path.join(tmp, 'pil')), rep)
                    rec(('photos', 'joblib+Pillow', w),
                        run_pil(pil_blur_thumb, 'joblib', w, photos, os.path.join(tmp, 'pil')), rep)
                if 'thumbs' in only:
                    rec(('thumbs', 'batchd', w), batchd_images(s, photos, thumb, out), rep)
                    rec(('thumbs', 'ProcessPoolExecutor+Pillow', w),
                        run_pil(pil_thumb256, 'ppe', w, photos, os.path.join(tmp, 'pil')), rep)
                    cp = subprocess.run([os.path.join(PEERS_DIR, 'vips.sh'), 'thumb', str(w), a.photos,
                                         os.path.join(tmp, 'vips')], capture_output=True, text=True,
                                        check=True, env=dict(os.environ, SIZE='256'))
                    rec(('thumbs', 'vipsthumbnail xargs -P', w), float(cp.stdout.split('\t')[5]), rep)
                if 'sqrt' in only:
                    rec(('sqrt', 'batchd', w), batchd_json(s, sqrt_body, SQRT_N, out, 'sqrt'), rep)
                    rec(('sqrt', 'Pool.map', w), run_sqrt_peer('pool', w), rep)
                    rec(('sqrt200k', 'batchd', w), batchd_json(s, sqrt_small, JOBLIB_SQRT_N, out, 'sqrt'), rep)
                    rec(('sqrt200k', 'joblib', w), run_sqrt_peer('joblib', w), rep)
                if 'cpu' in only:
                    rec(('cpu5M', 'batchd', w), batchd_json(s, cpu_small, CPU_JOBS, out), rep)
                    rec(('cpu5M', 'Pool intensive_task', w), run_intensive_peer(w), rep)
                    rec(('cpu100M', 'batchd', w), batchd_json(s, cpu_big, CPU_JOBS, out), rep)
                    t = time.perf_counter()
                    subprocess.run([a.cloop, str(CPU_BIG_N), str(CPU_JOBS), str(w)], check=True,
                                   stdout=subprocess.DEVNULL)
                    rec(('cpu100M', 'plain C loop', w), time.perf_counter() - t, rep)
                if 'http' in only and rep > 0:
                    r = wrk_run(s, a.wrk_secs, lua)
                    print(f'  http     wrk -c64 {a.wrk_secs}s                 w{w}  {r["rps"]:9.0f} req/s '
                          f'p50 {r["p50"]:.2f} ms p99 {r["p99"]:.2f} ms non2xx {r["non2xx"]} {r["sockerr"]}',
                          flush=True)
                    http.setdefault(w, []).append(r)
                mem_after[w].append(s.rss_mb())
    finally:
        peaks = {w: dict(servers[w].peaks) for w in W}
        mem_end = {w: servers[w].rss_mb() for w in W}
        for s in servers.values():
            s.stop()

    # hyperfine: the plain C loop again, as a cross-check of the in-driver timing.
    hf = {}
    if 'cpu' in only:
        for w in W:
            j = os.path.join(tmp, f'hf{w}.json')
            subprocess.run(['hyperfine', '-N', '--warmup', '1', '--runs', str(max(3, a.reps)), '--export-json', j,
                            f'{a.cloop} {CPU_BIG_N} {CPU_JOBS} {w}'], check=True, capture_output=True)
            with open(j) as f:
                hf[w] = json.load(f)['results'][0]['median']

    # ---------------------------------------------------------------- the report
    rows = []

    def ratio_row(wl, desc, sysname, peer, w, target=''):
        b, p = med(times.get((wl, sysname, w), [])), med(times.get((wl, peer, w), []))
        if math.isnan(b) or math.isnan(p):
            return
        rows.append(f'| {desc} | {w} | {sysname} | {b:.3f} | {peer} | {p:.3f} | {b / p:.2f} | {p / b:.2f}× | {target} |')

    for w in W:
        ratio_row('photos', 'photos blur(15)+thumb 1200, JPEG', 'batchd', 'ProcessPoolExecutor+Pillow', w, '≥3× faster')
        ratio_row('photos', 'photos blur(15)+thumb 1200, JPEG', 'batchd', 'joblib+Pillow', w)
        ratio_row('photos', 'photos blur(15)+thumb 1200, JPEG', 'batchd exact', 'ProcessPoolExecutor+Pillow', w,
                  '≥3× faster')
        ratio_row('photos', 'photos blur(15)+thumb 1200, JPEG', 'batchd exact', 'joblib+Pillow', w)
    for w in W:
        ratio_row('thumbs', 'thumbnails 256, JPEG', 'batchd', 'ProcessPoolExecutor+Pillow', w)
        ratio_row('thumbs', 'thumbnails 256, JPEG', 'batchd', 'vipsthumbnail xargs -P', w, 'no slower')
    for w in W:
        ratio_row('sqrt', '1M sqrt, one batch', 'batchd', 'Pool.map', w, 'faster')
        ratio_row('sqrt200k', '200k sqrt (joblib size)', 'batchd', 'joblib', w)
    for w in W:
        ratio_row('cpu5M', '8 × intensive_task (n=5M)', 'batchd', 'Pool intensive_task', w)
        ratio_row('cpu100M', '8 × cpu_loop n=100M', 'batchd', 'plain C loop', w, 'within 10%')
    table = ['| workload | workers | system | median s | peer | peer median s | batchd/peer | speed-up | target |',
             '|---|---|---|---|---|---|---|---|---|'] + rows

    extra = []
    c1, c2 = med(times.get(('cpu100M', 'batchd', 1), [])), med(times.get(('cpu100M', 'batchd', 2), []))
    if not math.isnan(c1 + c2):
        extra.append(f'- cpu_loop 8 × 100M: batchd 1 → 2 workers speed-up **{c1 / c2:.2f}×** (target ≥ 1.9×); '
                     f'plain C loop {med(times[("cpu100M", "plain C loop", 1)]) / med(times[("cpu100M", "plain C loop", 2)]):.2f}×'
                     + (f'; hyperfine medians of the C loop: 1 proc {hf[1]:.3f} s, 2 procs {hf[2]:.3f} s' if hf else ''))
    p1, p2 = med(times.get(('photos', 'batchd', 1), [])), med(times.get(('photos', 'batchd', 2), []))
    if not math.isnan(p1 + p2):
        extra.append(f'- photos: batchd 1 → 2 workers speed-up {p1 / p2:.2f}×')
    if http:
        extra.append('')
        extra.append(f'HTTP: wrk -t2 -c64 -d{a.wrk_secs}s, POST of 10 `square` jobs per batch (target ≥ 20,000 batches/s, '
                     'p99 < 20 ms, 2 workers); wrk shares the 2 cores with batchd.')
        extra.append('')
        extra.append('| workers | batches/s (median) | p50 ms | p99 ms | non-2xx |')
        extra.append('|---|---|---|---|---|')
        for w in W:
            rs = http.get(w, [])
            if rs:
                extra.append(f'| {w} | {med([r["rps"] for r in rs]):.0f} | {med([r["p50"] for r in rs]):.2f} | '
                             f'{med([r["p99"] for r in rs]):.2f} | {sum(r["non2xx"] for r in rs)} |')
    if 'memory' in only:
        extra.append('')
        extra.append('Memory: RSS summed over the batchd process tree (server + workers), MB.')
        extra.append('')
        extra.append('| workers | at start | peak during photos | peak during 1M sqrt | after each round (warm-up, 1..REPS) | at end |')
        extra.append('|---|---|---|---|---|---|')
        for w in W:
            pk = peaks[w]
            extra.append(f'| {w} | {mem_start[w]:.1f} | {pk.get("photos", 0) / 1024:.1f} | {pk.get("sqrt", 0) / 1024:.1f} | '
                         f'{", ".join(f"{x:.1f}" for x in mem_after[w])} | {mem_end[w]:.1f} |')

    cpu_model = 'unknown'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu_model = line.split(':', 1)[1].strip()
                break
    try:
        commit = subprocess.run(['git', '-C', HERE, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', HERE, 'status', '--porcelain', '--untracked-files=no'],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = '?', ''
    vips_v = subprocess.run(['vips', '--version'], capture_output=True, text=True).stdout.strip()
    now = datetime.datetime.now()
    head = [f'# batchd benchmark {now:%Y-%m-%d %H:%M}', '',
            f'- command: `{a.command}`, {a.reps} repetitions after a warm-up, medians; '
            f'wall time {time.time() - t_start:.0f} s',
            f'- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model}, '
            f'Linux {platform.release()}, load at end {os.getloadavg()[0]:.2f}',
            f'- batchd {commit}{" (dirty)" if dirty else ""} Release build; Python {platform.python_version()}, '
            f'Pillow {Image.__version__}, joblib {joblib.__version__}, {vips_v}',
            f'- inputs: {len(photos)} photos of {a.photos} '
            '(batchd: multipart upload; Pillow peers: JPEG q85 out, as batchd); 1M sqrt = range(10, 1000010); '
            'joblib sqrt on 200k items (peers.py: joblib n_jobs=1 is super-linear in tasks); '
            'times are end to end (curl: request start to last byte; peers: pool start to results)',
            '- batchd/peer < 1 means batchd is faster; speed-up = peer/batchd', '']
    text = '\n'.join(head + table + [''] + extra) + '\n'
    os.makedirs(a.results, exist_ok=True)
    path = os.path.join(a.results, f'{now:%Y-%m-%d-%H%M}.md')
    with open(path, 'w') as f:
        f.write(text)
    print()
    print(text)
    print(f'written to {path}')
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
