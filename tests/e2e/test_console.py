"""The web console (SPEC §11) in a real headless Chromium, against the real server.

Drives Debian's chromium with chromedriver through Debian's python3-selenium: runs a
numeric batch and sees its count reach the total; uploads three photos with a two-step
pipeline and sees three decoded thumbnails; downloads the tar and reads its members;
cancels a running batch (and sees the server drop it); the Pool and History views; the
token prompt under --auth-token-file; the page at phone width. Stored batches (SPEC §8) on
a second server: an async batch followed live while the server is killed (-9) and started
again on the same state dir and port (the page resumes with Last-Event-ID, no line repeated
or missing), a reload while one runs, a stored cancel, the NDJSON/JSON/tar downloads of a
stored image batch, and the History list of the real stored batches. Every request the browser
makes must stay on 127.0.0.1 (CDP Network events from the performance log) and the
browser console must stay free of errors. Screenshots of each view go to
$BATCHD_ARTIFACTS (default: the build dir's artifacts/console/).

Exits 77 (skipped) when chromium, chromedriver or selenium is missing: tests/run-all.sh
installs them (chromium chromium-driver python3-selenium).
"""
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, SANITIZED, SHARED, Server, Suite, check, free_port  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None

PHOTOS = [os.path.join(SHARED, "data", "photos", n) for n in (
    "Bridge_by_Sander_Klootwijk.jpg", "Painting-Colors_by__herobrine7gamer.jpg",
    "Dragonfly_by_Bolly.jpg")]
ARTIFACTS = os.environ.get("BATCHD_ARTIFACTS") or os.path.join(
    os.path.dirname(os.path.abspath(BIN)), "artifacts", "console")
WAIT = 60  # seconds for anything the page waits for (a loaded 2-core machine)

S = None        # the server
D = None        # the browser
DOWNLOADS = None
PROFILE = None  # the browser's fresh profile (--user-data-dir)
REQUESTS = []   # every URL the browser asked for
REQUEST_HEADERS = []  # (url, headers) of each of them
STORED_ORIGINS = []  # the servers of the stored-batch tests
CONSOLE = []    # every console message of level SEVERE or WARNING


def drain_logs():
    for e in D.get_log("performance"):
        m = json.loads(e["message"])["message"]
        if m.get("method") == "Network.requestWillBeSent":
            REQUESTS.append(m["params"]["request"]["url"])
            REQUEST_HEADERS.append((m["params"]["request"]["url"], m["params"]["request"].get("headers", {})))
    for e in D.get_log("browser"):
        if e["level"] in ("SEVERE", "WARNING"):
            CONSOLE.append(e)


def shot(name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    D.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))


def wait(cond, what, timeout=WAIT):
    try:
        return WebDriverWait(D, timeout, poll_frequency=0.1).until(lambda d: cond())
    except Exception:
        shot("failed-" + what.replace(" ", "-"))
        raise AssertionError("timed out waiting for " + what + "; state: " + D.execute_script(
            "return [document.getElementById('w-state').textContent,"
            " document.getElementById('w-done').textContent,"
            " document.getElementById('w-message').textContent].join(' | ')"))


def text(id_):
    return D.find_element(By.ID, id_).text


def js(script, *args):
    return D.execute_script(script, *args)


def open_console(server):
    D.get("http://127.0.0.1:%d/" % server.port)
    wait(lambda: js("return document.body.dataset.ready === 'true'"), "the page to load")


def table_rows():
    """The results table's cells, read in one go (a render may replace the rows)."""
    return js("return [...document.querySelectorAll('#w-results tbody tr')]"
              ".map(r => [...r.cells].map(c => c.textContent))")


def set_value(id_, value):
    el = D.find_element(By.ID, id_)
    el.clear()
    el.send_keys(str(value))


def metric(server, name):
    status, _, body = server.request("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def metric_sum(server, name):
    """The sum of metric NAME over all its labels."""
    status, _, body = server.request("GET", "/metrics")
    return sum(float(l.split()[-1]) for l in body.decode().splitlines()
               if l.startswith(name + "{") or l.startswith(name + " "))


def set_viewport(w, h):
    """Sizes the window so that the page itself gets W x H CSS pixels."""
    D.set_window_size(w, h)
    dw, dh = js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
    if dw or dh:
        D.set_window_size(w + dw, h + dh)


def start_browser():
    global PROFILE
    PROFILE = tempfile.mkdtemp(prefix="batchd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-extensions",
              "--disable-default-apps", "--no-default-browser-check",
              "--window-size=1280,800", "--user-data-dir=" + PROFILE):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {
        "download.default_directory": DOWNLOADS, "download.prompt_for_download": False,
        "download.directory_upgrade": True, "safebrowsing.enabled": False})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    return d


# ---------------------------------------------------------------------------------- tests

def test_1_numbers_count_reaches_total():
    open_console(S)
    shot("run-numbers")
    Select(D.find_element(By.ID, "num-op")).select_by_value("sqrt")
    set_value("num-from", 1)
    n = 200000 if SANITIZED else 1000000   # a sanitized server writes lines slower
    set_value("num-to", n)
    check("{:,} inputs".format(n) in text("num-count"), text("num-count"))
    D.find_element(By.ID, "num-run").click()
    wait(lambda: text("w-state") == "done", "the numeric batch to finish")
    check(text("w-done") == "{0:,} / {0:,}".format(n), text("w-done"))
    check(text("w-ok") == "{:,}".format(n) and text("w-failed") == "0", (text("w-ok"), text("w-failed")))
    rows = table_rows()
    check(len(rows) == 200, len(rows))  # a bounded ring, not a million rows
    want = "1000.0" if n == 1000000 else repr(n ** 0.5)
    check(rows[0][0] == str(n - 1) and rows[0][1] == want, rows[0])
    check(js("return document.getElementById('w-progress').value") == n)
    # the timeline merged the chunks' jobs into a bounded number of bars
    check(0 < js("return document.getElementById('w-timeline-note').textContent.length"))
    shot("watch-numbers")


def test_1b_errors_by_code():
    open_console(S)
    Select(D.find_element(By.ID, "num-op")).select_by_value("sqrt")
    D.find_element(By.CSS_SELECTOR, "input[name=num-src][value=paste]").click()
    set_value("num-inputs", '-1\n4\n"x"\n-9')
    check(text("num-count") == "4 inputs", text("num-count"))
    D.find_element(By.ID, "num-run").click()
    wait(lambda: text("w-state") == "done", "the batch with bad inputs")
    check(text("w-ok") == "1" and text("w-failed") == "3",
          (text("w-ok"), text("w-failed")))
    texts = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"
    codes = sorted(js(texts, "#w-error-codes li"))
    check(codes == ["domain_error × 2", "invalid_input × 1"], codes)
    errors = js(texts, "#w-errors li")
    check(len(errors) == 3 and errors[0].startswith("#3 domain_error"), errors)
    shot("watch-errors")


def test_2_images_three_thumbnails():
    open_console(S)
    D.find_element(By.CSS_SELECTOR, "input[name=kind][value=images]").click()
    D.find_element(By.ID, "img-files").send_keys("\n".join(PHOTOS))
    wait(lambda: text("img-count").startswith("3 images"), "the files to be taken")
    # the form starts with a thumbnail step (256 x 256); add a second step: sharpen
    Select(D.find_element(By.ID, "img-step-add")).select_by_value("sharpen")
    D.find_element(By.ID, "img-step-add-btn").click()
    steps = [li.get_attribute("data-op") for li in D.find_elements(By.CSS_SELECTOR, "#img-steps > li")]
    check(steps == ["thumbnail", "sharpen"], steps)
    shot("run-images")
    D.find_element(By.ID, "img-run").click()
    wait(lambda: text("w-state") == "done", "the image batch to finish")
    wait(lambda: js("return [...document.querySelectorAll('#w-thumbs img')]"
                    ".filter(i => i.complete && i.naturalWidth > 0).length") == 3,
         "three decoded thumbnails")
    sizes = js("return [...document.querySelectorAll('#w-thumbs img')].map(i => [i.naturalWidth, i.naturalHeight])")
    check(all(max(w, h) == 256 for w, h in sizes), sizes)
    check(js("return document.getElementById('w-upload').value") == 1)
    check(text("w-done") == "3 / 3", text("w-done"))
    js("window.scrollTo(0, 0)")
    shot("watch-images")


def test_3_download_tar():
    # continues from the image batch: the tar is the same batch run again with Accept
    for f in os.listdir(DOWNLOADS):
        os.unlink(os.path.join(DOWNLOADS, f))
    D.find_element(By.ID, "w-dl-tar").click()

    def done():
        names = [n for n in os.listdir(DOWNLOADS) if n.endswith(".tar")]
        return names[0] if names else None
    name = wait(done, "the tar download")
    with tarfile.open(os.path.join(DOWNLOADS, name)) as t:
        members = t.getnames()
        summary = json.load(t.extractfile("summary.json"))
    # the page sends the files sorted by name (a dropped folder comes in any order)
    want = sorted(os.path.splitext(os.path.basename(p))[0] + ".jpeg" for p in PHOTOS)
    check(members == want + ["errors.ndjson", "summary.json"], members)
    check(summary["jobs"] == 3 and summary["ok"] == 3, summary)
    wait(lambda: text("w-message").startswith("Downloaded TAR"), "the download message")
    # and NDJSON: a summary last
    D.find_element(By.ID, "w-dl-ndjson").click()
    nd = wait(lambda: ([n for n in os.listdir(DOWNLOADS) if n.endswith(".ndjson")] or [None])[0],
              "the NDJSON download")
    time.sleep(0.3)
    with open(os.path.join(DOWNLOADS, nd)) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    check(len(lines) == 4 and "summary" in lines[-1], lines[-1])


def test_3b_variants():
    open_console(S)
    D.find_element(By.CSS_SELECTOR, "input[name=kind][value=images]").click()
    D.find_element(By.ID, "img-files").send_keys(PHOTOS[0])
    wait(lambda: text("img-count").startswith("1 image"), "the file to be taken")
    D.find_element(By.ID, "img-variant-add").click()
    D.find_element(By.ID, "img-variant-add").click()
    boxes = D.find_elements(By.CSS_SELECTOR, "#img-variants input[type=number]")
    check(len(boxes) == 4, len(boxes))   # each variant starts with a thumbnail: width, height
    for b in boxes[2:]:
        b.clear()
        b.send_keys("64")
    Select(D.find_element(By.ID, "var-fmt-2")).select_by_value("png")
    D.find_element(By.ID, "img-run").click()
    wait(lambda: text("w-state") == "done", "the variants batch")
    wait(lambda: js("return [...document.querySelectorAll('#w-thumbs img')]"
                    ".filter(i => i.complete && i.naturalWidth > 0).length") == 2, "two variants")
    sizes = js("return [...document.querySelectorAll('#w-thumbs img')].map(i => Math.max(i.naturalWidth, i.naturalHeight))")
    check(sizes == [256, 64], sizes)
    srcs = js("return [...document.querySelectorAll('#w-thumbs img')].map(i => i.alt)")
    check("(small)" in srcs[0] and "(medium)" in srcs[1] and srcs[1].endswith("png"), srcs)


def test_4_cancel():
    open_console(S)
    Select(D.find_element(By.ID, "num-op")).select_by_value("sleep")
    D.find_element(By.CSS_SELECTOR, "input[name=num-src][value=paste]").click()
    set_value("num-inputs", json.dumps([300] * 60))   # 60 x 300 ms on 2 workers: ~9 s
    set_value("num-chunksize", 1)
    D.find_element(By.ID, "num-run").click()
    wait(lambda: text("w-state") == "running" and int(text("w-done").split(" /")[0]) >= 2,
         "the first results")
    D.find_element(By.ID, "w-cancel").click()
    wait(lambda: text("w-state") == "cancelled", "the cancel")
    done = int(text("w-done").split(" /")[0])
    check(done < 60, done)
    shot("watch-cancelled")
    # the server dropped the batch when the browser closed the connection
    end = time.time() + 20
    while time.time() < end and metric(S, "batchd_batches_in_flight") != 0:
        time.sleep(0.2)
    check(metric(S, "batchd_batches_in_flight") == 0, "the batch still runs on the server")
    check(metric(S, "batchd_queue_depth") == 0)
    check(not D.find_element(By.ID, "w-resubmit").get_attribute("disabled"))


def test_5_pool_and_history():
    open_console(S)
    D.find_element(By.ID, "tab-pool").click()
    wait(lambda: text("p-idle") not in ("", "–"), "the pool numbers")
    busy, idle = js("return [document.getElementById('p-busy').textContent,"
                    " document.getElementById('p-idle').textContent]")
    check(int(busy) + int(idle) == 2, (busy, idle))
    # read in one go: the view is redrawn from /metrics every 2 s
    causes = js("return [...document.querySelectorAll('#p-restarts tbody tr')]"
                ".map(r => r.cells[0].textContent)")
    check(sorted(causes) == ["crash", "recycle", "timeout"], causes)
    shot("pool")
    D.find_element(By.ID, "tab-history").click()
    # The server keeps stored batches (SPEC §8), but the batches so far were streamed ones,
    # which are not kept: the view says there are none yet, and how to make one, rather than
    # an empty table; a stored batch can still be followed by its id.
    wait(lambda: text("h-note").startswith("No stored batches yet"), "the history note")
    check(D.find_element(By.ID, "follow-form").is_displayed())
    check(not D.find_element(By.ID, "h-table").is_displayed())
    shot("history")


def test_6_keyboard_tabs():
    open_console(S)
    D.find_element(By.ID, "tab-run").click()
    from selenium.webdriver.common.keys import Keys
    D.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    check(D.find_element(By.ID, "tab-watch").get_attribute("aria-selected") == "true")
    check(js("return document.activeElement.id") == "tab-watch")
    # every form control has a label (a <label for>, a wrapping label or aria-label)
    unlabelled = js("""return [...document.querySelectorAll('input, select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.id || e.outerHTML)""")
    check(unlabelled == [], unlabelled)


def test_7_phone_width():
    # A window cannot be narrower than 500 px: a phone's 375 px is emulated (CDP).
    D.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    try:
        open_console(S)
        width = js("return window.innerWidth")
        check(width == 375, width)
        overflow = js("return document.documentElement.scrollWidth")
        check(overflow <= width, (overflow, width))
        shot("phone-run")
        set_value("num-to", 1000)
        D.find_element(By.ID, "num-run").click()
        wait(lambda: text("w-state") == "done", "the phone-width batch")
        check(js("return document.documentElement.scrollWidth") <= js("return window.innerWidth"))
        shot("phone-watch")
        for view in ("pool", "history"):
            D.find_element(By.ID, "tab-" + view).click()
            check(js("return document.documentElement.scrollWidth") <= js("return window.innerWidth"), view)
            shot("phone-" + view)
    finally:
        D.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_8_token_prompt():
    tokdir = tempfile.mkdtemp(prefix="batchd-console-token-")
    path = os.path.join(tokdir, "tokens")
    with open(path, "w") as f:
        f.write("console-s3cret\n")
    with Server(workers=1, args=["--auth-token-file", path]) as s2:
        D.get("http://127.0.0.1:%d/" % s2.port)
        wait(lambda: js("return document.getElementById('token-dialog').open"), "the token prompt")
        shot("token")
        set_value("token-input", "console-s3cret")
        D.find_element(By.ID, "token-submit").click()
        wait(lambda: js("return document.body.dataset.ready === 'true'"), "the page after the token")
        check(js("return sessionStorage.getItem('batchd.token')") == "console-s3cret")
        check(not js("return document.getElementById('token-dialog').open"))
        set_value("num-to", 500)
        D.find_element(By.ID, "num-run").click()
        wait(lambda: text("w-state") == "done", "the batch with a token")
        check(text("w-done") == "500 / 500", text("w-done"))
        # the server saw the token: a request without it is refused
        status, _, _ = s2.request("GET", "/v1/ops")
        check(status == 401, status)
        D.get("about:blank")  # before the server stops: the page polls /metrics
        drain_logs()
    os.unlink(path)
    os.rmdir(tokdir)


def stored_server():
    """A second server for the stored batches (SPEC §8), on a port it keeps over a restart
    (the page reconnects to the same origin) and with a state dir of its own."""
    return Server(workers=2, port=free_port())


def results_requests(port):
    """(url, Last-Event-ID or None) of every results request the browser sent to PORT."""
    drain_logs()
    base = "http://127.0.0.1:%d/v1/batches/" % port
    out = []
    for url, headers in REQUEST_HEADERS:
        if url.startswith(base) and "/results" in url:
            lei = [v for k, v in headers.items() if k.lower() == "last-event-id"]
            out.append((url, lei[0] if lei else None))
    return out


def newest_batch(server):
    status, _, body = server.request("GET", "/v1/batches?limit=1")
    check(status == 200, (status, body))
    return json.loads(body)["batches"][0]


def watched_indexes():
    return sorted(int(r[0]) for r in table_rows())


def run_stored(op, inputs, chunksize="auto"):
    """Runs OP of INPUTS as a stored (async) batch from the Run view."""
    D.find_element(By.ID, "tab-run").click()
    Select(D.find_element(By.ID, "num-op")).select_by_value(op)
    D.find_element(By.CSS_SELECTOR, "input[name=num-src][value=paste]").click()
    set_value("num-inputs", json.dumps(inputs))
    set_value("num-chunksize", chunksize)
    box = D.find_element(By.ID, "num-async")
    if not box.is_selected():
        box.click()
    D.find_element(By.ID, "num-run").click()


def done_count():
    return int(text("w-done").split(" /")[0].replace(",", ""))


def test_8b_stored_batch_survives_a_server_restart():
    """An async batch followed in the page; the server is killed (-9) mid-way and started
    again on the same state dir and port: the page reconnects with Last-Event-ID and ends
    with every index once, the counts N / N."""
    with stored_server() as r:
        STORED_ORIGINS.append("http://127.0.0.1:%d/" % r.port)
        open_console(r)
        check(D.find_element(By.ID, "num-async").get_attribute("disabled") is None, "async stays disabled")
        n = 80
        run_stored("sleep", [100] * n, 1)  # 80 x 100 ms on 2 workers: ~4 s, killed after ~0.5 s
        wait(lambda: text("w-state") == "running" and done_count() >= 10, "the first stored results")
        drain_logs()
        before = len(CONSOLE)
        r.proc.kill()
        r.proc.wait()
        wait(lambda: "reconnecting" in text("w-message"), "the page to see the drop")
        seen = done_count()
        check(10 <= seen < n, seen)
        r.start()  # the same state dir and port: the batch carries on
        wait(lambda: text("w-state") == "done", "the stored batch to finish after the restart")
        check(text("w-done") == "%d / %d" % (n, n) and text("w-ok") == str(n),
              (text("w-done"), text("w-ok")))
        idx = watched_indexes()
        check(idx == list(range(n)), idx)  # none repeated, none missing
        check(any("batch_resumed" in l for l in r.log_lines), "the server did not resume the batch")
        # the first request had no Last-Event-ID; the one that got through after the restart
        # named the last seq the page had
        reqs = results_requests(r.port)
        check(len(reqs) >= 2 and reqs[0][1] is None, reqs)
        resumed = [int(lei) for _, lei in reqs[1:] if lei is not None]
        check(resumed and seen <= resumed[-1] < n, (seen, reqs))
        check(js("return sessionStorage.getItem('batchd.following')") is None)
        # while the server was down the browser logged its failed requests: only those
        drain_logs()
        down = CONSOLE[before:]
        del CONSOLE[before:]
        check(all(e["message"].startswith(STORED_ORIGINS[-1]) and "net::ERR_" in e["message"]
                  for e in down), down)
        shot("watch-stored")

        # A reload while a stored batch runs: the page follows it again by itself and
        # rebuilds its counts from the stored results, none missing, none twice.
        n = 60
        run_stored("sleep", [100] * n, 1)
        wait(lambda: text("w-state") == "running" and done_count() >= 5,
             "the second stored batch to start")
        D.refresh()
        wait(lambda: js("return document.body.dataset.ready === 'true'"), "the page after the reload")
        wait(lambda: text("w-state") == "done", "the followed batch after the reload")
        check(text("w-done") == "%d / %d" % (n, n) and text("w-ok") == str(n),
              (text("w-done"), text("w-ok")))
        check(watched_indexes() == list(range(n)), watched_indexes())
        check(js("return sessionStorage.getItem('batchd.following')") is None)

        # the stored lines' numbers as the server wrote them, as for a streamed batch
        run_stored("sqrt", [4, 2])
        wait(lambda: text("w-state") == "done", "the stored sqrt batch")
        check("stored batch" in text("w-message"), text("w-message"))
        check(sorted(r_[:2] for r_ in table_rows()) == [["0", "2.0"], ["1", "1.4142135623730951"]],
              table_rows())
        D.get("about:blank")  # before the server stops: the page polls /metrics


def test_8c_stored_cancel_downloads_and_history():
    with stored_server() as r:
        STORED_ORIGINS.append("http://127.0.0.1:%d/" % r.port)
        open_console(r)
        # cancel: the server records the rest as cancelled, and the page shows them all
        n = 40
        run_stored("sleep", [300] * n, 1)  # 40 x 300 ms on 2 workers: ~6 s
        wait(lambda: text("w-state") == "running" and done_count() >= 2, "the stored batch to run")
        D.find_element(By.ID, "w-cancel").click()
        wait(lambda: text("w-state") == "cancelled", "the stored cancel")
        check(text("w-done") == "%d / %d" % (n, n), text("w-done"))
        failed = int(text("w-failed"))
        check(failed >= 1 and int(text("w-ok")) + failed == n, (text("w-ok"), failed))
        codes = js("return [...document.querySelectorAll('#w-error-codes li')].map(e => e.textContent)")
        check(codes == ["cancelled × %d" % failed], codes)
        cancelled = newest_batch(r)
        check(cancelled["state"] == "cancelled" and cancelled["jobs"]["failed"] == failed, cancelled)
        check(watched_indexes() == list(range(n)), watched_indexes())
        shot("watch-stored-cancelled")

        # three photos as a stored batch: thumbnails, then its results downloaded (no re-run)
        D.find_element(By.ID, "tab-run").click()
        D.find_element(By.CSS_SELECTOR, "input[name=kind][value=images]").click()
        D.find_element(By.ID, "img-files").send_keys("\n".join(PHOTOS))
        wait(lambda: text("img-count").startswith("3 images"), "the files to be taken")
        D.find_element(By.ID, "img-async").click()
        D.find_element(By.ID, "img-run").click()
        wait(lambda: text("w-state") == "done", "the stored image batch")
        wait(lambda: js("return [...document.querySelectorAll('#w-thumbs img')]"
                        ".filter(i => i.complete && i.naturalWidth > 0).length") == 3,
             "three decoded thumbnails of the stored batch")
        images = newest_batch(r)
        check(images["state"] == "done" and images["jobs"]["ok"] == 3, images)
        js("window.scrollTo(0, 0)")
        shot("watch-stored-images")
        runs = metric_sum(r, "batchd_jobs_total")
        for f in os.listdir(DOWNLOADS):
            os.unlink(os.path.join(DOWNLOADS, f))
        got = {}
        for ext in ("tar", "ndjson", "json"):
            D.find_element(By.ID, "w-dl-" + ext).click()
            got[ext] = os.path.join(DOWNLOADS, wait(
                lambda: ([f for f in os.listdir(DOWNLOADS) if f.endswith("." + ext)] or [None])[0],
                "the stored %s download" % ext))
            wait(lambda: text("w-message").startswith("Downloaded " + ext.upper()),
                 "the %s download message" % ext)
        check(all(images["id"] in os.path.basename(p) for p in got.values()), got)
        time.sleep(0.3)  # the browser renames a finished download into place
        with tarfile.open(got["tar"]) as t:
            members = t.getnames()
            summary = json.load(t.extractfile("summary.json"))
        want = sorted(os.path.splitext(os.path.basename(p))[0] + ".jpeg" for p in PHOTOS)
        check(sorted(members[:-2]) == want and members[-2:] == ["errors.ndjson", "summary.json"], members)
        check(summary["jobs"] == 3 and summary["ok"] == 3 and summary["batch"] == images["id"], summary)
        with open(got["ndjson"]) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        check(len(lines) == 4 and "summary" in lines[-1], lines[-1])
        check(sorted(l["index"] for l in lines[:-1]) == [0, 1, 2], lines)
        check([l["seq"] for l in lines[:-1]] == [1, 2, 3], [l.get("seq") for l in lines])
        with open(got["json"]) as f:
            doc = json.load(f)
        check(len(doc["results"]) == 3 and all("result" in x for x in doc["results"]), doc.keys())
        check(metric_sum(r, "batchd_jobs_total") == runs, "a stored download ran the batch again")

        # the history lists the real stored batches, newest first, with their states
        D.find_element(By.ID, "tab-history").click()
        wait(lambda: len(D.find_elements(By.CSS_SELECTOR, "#h-table tbody tr")) == 2, "the history list")
        rows = js("return [...document.querySelectorAll('#h-table tbody tr')]"
                  ".map(r => [...r.cells].map(c => c.textContent))")
        check([x[:3] for x in rows] == [[images["id"], "done", images["op"]],
                                        [cancelled["id"], "cancelled", "sleep"]], rows)
        check(rows[1][3] == "%d / %d" % (n, n), rows[1])
        check(D.find_element(By.ID, "follow-form").is_displayed())
        shot("history-stored")
        # Watch on an ended batch: its stored lines again, the same counts
        D.find_element(By.CSS_SELECTOR, "#h-table tbody tr:nth-child(2) button").click()
        wait(lambda: text("w-state") == "cancelled", "the cancelled batch watched again")
        check(text("w-done") == "%d / %d" % (n, n) and int(text("w-failed")) == failed,
              (text("w-done"), text("w-failed")))

        # Another client's streamed batch is listed while it runs; Watch shows its counts
        # from its status (its results go only to its own stream), and it is left alone.
        import threading
        streamed = {}
        t = threading.Thread(target=lambda: streamed.update(out=r.batch(
            {"op": "sleep", "inputs": [200] * 20, "chunksize": 1})))
        t.start()
        try:
            end = time.time() + WAIT
            while time.time() < end and newest_batch(r)["id"] == images["id"]:
                time.sleep(0.05)
            sid = newest_batch(r)["id"]
            drain_logs()
            before = len(CONSOLE)
            D.find_element(By.ID, "tab-history").click()
            wait(lambda: len(D.find_elements(By.CSS_SELECTOR, "#h-table tbody tr")) == 3, "the streamed batch listed")
            D.find_element(By.CSS_SELECTOR, "#h-table tbody tr:nth-child(1) button").click()
            wait(lambda: "streams its results" in text("w-message"), "the streamed batch watched")
            wait(lambda: text("w-state") in ("done", "ended"), "the streamed batch to end")
        finally:
            t.join(WAIT)
        # the page learns it from a 404 on the results and again once the batch is gone:
        # Chromium logs both, and only those
        drain_logs()
        seen = CONSOLE[before:]
        del CONSOLE[before:]
        check(len(seen) <= 2 and all(sid in e["message"] and "404" in e["message"] for e in seen), seen)
        lines, status, _ = streamed["out"]
        check(status == 200 and len(lines) == 21 and "summary" in lines[-1], lines[-1:])
        D.get("about:blank")


def test_9_loopback_only_and_no_console_error():
    drain_logs()
    check(len(REQUESTS) > 20, REQUESTS)
    # Network schemes must name 127.0.0.1; the rest are the browser's own (its new-tab page's
    # chrome:// files before the first navigation) or the page's blob:/data: URLs.
    away = []
    for u in REQUESTS:
        scheme = u.split(":", 1)[0]
        if scheme in ("http", "https", "ws", "wss", "ftp"):
            if urllib.parse.urlsplit(u).hostname != "127.0.0.1":
                away.append(u)
        elif scheme not in ("blob", "data", "chrome", "about"):
            away.append(u)
    check(away == [], away)
    check(any(u.startswith("http://127.0.0.1:%d/v1/batches" % S.port) for u in REQUESTS))
    check(len(STORED_ORIGINS) == 2 and all(any(u.startswith(o) for u in REQUESTS)
                                           for o in STORED_ORIGINS), STORED_ORIGINS)
    check(CONSOLE == [], CONSOLE)


def main():
    global S, D, DOWNLOADS
    missing = [p for p, ok in (("chromium", os.path.exists(CHROMIUM)),
                               ("chromedriver", os.path.exists(CHROMEDRIVER)),
                               ("python3-selenium", webdriver is not None)) if not ok]
    if missing:
        print("SKIP: %s not installed (apt-get install chromium chromium-driver python3-selenium)"
              % ", ".join(missing))
        return 77
    DOWNLOADS = tempfile.mkdtemp(prefix="batchd-console-dl-")
    D = start_browser()
    set_viewport(1280, 800)
    try:
        with Server(workers=2) as S:
            code = Suite("console").run(globals())
    finally:
        try:
            drain_logs()
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        D.quit()
        shutil.rmtree(DOWNLOADS, ignore_errors=True)
        shutil.rmtree(PROFILE, ignore_errors=True)
    print("screenshots in", ARTIFACTS)
    return code


if __name__ == "__main__":
    sys.exit(main())
