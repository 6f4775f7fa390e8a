#!/usr/bin/python3
"""Quality bar of the image engine (issue 3), against Pillow, without the server.

Runs tests/tools/imgrun (the image op's run() on a file; path in BATCHD_IMGRUN) and compares
its PNG output with Pillow 9.4 (Debian's python3-pil) from the same source, in RGB (over white
where there is alpha):
  - thumbnail and resize: Pillow's exact dimensions, >= 40 dB;
  - blur(sigma): >= 36 dB against Pillow's GaussianBlur(sigma);
  - blur(15) then thumbnail(1200): >= 38 dB, optimised (step reordering, shrink-on-load) and
    exact;
  - every valid PngSuite image round-trips pixel-exact as RGBA8 against Pillow's decode
    (16-bit gray, which Pillow clips when converting, against the high byte of its values);
  - every JPEG Pillow decodes is decoded within 40 dB of it (full size) or refused with a
    clear error; EXIF orientations match ImageOps.exif_transpose;
  - the PngSuite x*.png are refused; every file of data/broken gives a result or a per-job
    error: never a crash, never a hang.
Only Pillow is needed (PSNR from ImageChops + ImageStat, no numpy). Under sanitizers
(BATCHD_SANITIZED=1) the large photos are cut to a subset.
"""
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from PIL import Image, ImageChops, ImageCms, ImageFilter, ImageOps, ImageStat

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get('BATCHD_SHARED') or os.path.join(HERE, '..', '..', '..', 'shared')
DATA = os.path.join(SHARED, 'data')
IMGRUN = os.environ.get('BATCHD_IMGRUN') or os.path.join(HERE, '..', '..', 'build', 'imgrun')
SANITIZED = os.environ.get('BATCHD_SANITIZED', '0') not in ('', '0', 'false', 'FALSE', 'OFF')
TIMEOUT = 120 if SANITIZED else 30

failures = []
TMP = tempfile.mkdtemp(prefix='batchd-imgq-')


def fail(what):
    failures.append(what)
    print('FAIL', what, flush=True)


def run(path, params, out=None):
    """Runs imgrun on PATH; returns (result dict or None, error dict or None, seconds)."""
    args = [IMGRUN, '-p', json.dumps(params)]
    if out:
        args += ['-o', out]
    t = time.perf_counter()
    # Sanitizer reports exit with 86, not 1 (a per-job error): they must fail the test.
    env = dict(os.environ, IMGRUN_TIME='1',
               ASAN_OPTIONS='exitcode=86:' + os.environ.get('ASAN_OPTIONS', ''),
               UBSAN_OPTIONS='halt_on_error=1:exitcode=86:' + os.environ.get('UBSAN_OPTIONS', ''))
    p = subprocess.run(args + [path], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    dt = time.perf_counter() - t
    if p.returncode not in (0, 1):
        raise RuntimeError(f'imgrun died on {path}: status {p.returncode}: {p.stderr[-500:]}')
    line = json.loads(p.stdout.strip().splitlines()[-1])
    try:
        dt = float(p.stderr.split('imgrun:')[1].split()[0])  # the job alone, not the process
    except (IndexError, ValueError):
        pass
    return line.get('result'), line.get('error'), dt


def rgb(im):
    if im.mode in ('RGBA', 'LA', 'RGBa', 'La') or 'transparency' in im.info:
        im = im.convert('RGBA')
        bg = Image.new('RGBA', im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        return bg.convert('RGB')
    return im.convert('RGB')


SRGB = ImageCms.createProfile('sRGB')


def srgb(im):
    """IM through its embedded ICC profile to sRGB, as Pillow's ImageCms does it (batchd's
    default, SPEC §6 icc "srgb"); IM itself without a usable profile."""
    icc = im.info.get('icc_profile')
    if not icc or im.mode not in ('RGB', 'RGBA', 'CMYK'):
        return im
    try:
        prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(im, prof, SRGB, outputMode='RGBA' if im.mode == 'RGBA'
                                        else 'RGB')
    except (ImageCms.PyCMSError, OSError):
        return im
    out.info = {k: v for k, v in im.info.items() if k != 'icc_profile'}
    return out


def srgb_open(path):
    return srgb(Image.open(path))


def psnr(a, b):
    a, b = rgb(a), rgb(b)
    if a.size != b.size:
        return -1.0
    s = sum(ImageStat.Stat(ImageChops.difference(a, b)).sum2)
    mse = s / (a.size[0] * a.size[1] * 3)
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


def ours(path, params, name='o.png'):
    out = os.path.join(TMP, name)
    res, err, dt = run(path, dict(params, format='png', png_level=0), out)
    if err:
        return None, err, dt
    im = Image.open(out)
    im.load()
    return im, None, dt


def photos():
    d = os.path.join(DATA, 'photos')
    files = sorted(os.path.join(d, f) for f in os.listdir(d))
    if SANITIZED:  # the smallest three: the sanitizers make big ones slow
        files = sorted(files, key=lambda f: Image.open(f).size[0] * Image.open(f).size[1])[:3]
    return files


def check(name, value, bar, extra=''):
    ok = value >= bar
    print(f'  {name:<60} {value:7.2f} dB {"ok" if ok else "< %g" % bar} {extra}', flush=True)
    if not ok:
        fail(f'{name}: {value:.2f} dB < {bar}')


def test_thumbnail_resize():
    print('thumbnail / resize vs Pillow (>= 40 dB, same size)')
    for f in photos():
        base = os.path.basename(f)
        for box in (1200, 256):
            ref = srgb_open(f)
            ref.thumbnail((box, box))
            im, err, _ = ours(f, {'pipeline': [{'op': 'thumbnail', 'width': box, 'height': box}],
                                  'auto_orient': False})
            if err or im.size != ref.size:
                fail(f'thumbnail({box}) {base}: {err or im.size} != {ref.size}')
                continue
            check(f'thumbnail({box}) {base}', psnr(ref, im), 40)
        src = srgb_open(f)
        w, h = src.size
        cases = [({'op': 'resize', 'width': 800}, lambda s: s.resize((800, round(h * 800 / w)), Image.LANCZOS)),
                 ({'op': 'resize', 'width': 640, 'height': 640, 'fit': 'cover'},
                  lambda s: ImageOps.fit(s, (640, 640), Image.LANCZOS)),
                 ({'op': 'resize', 'width': 500, 'height': 500, 'fit': 'contain', 'filter': 'bilinear'},
                  lambda s: ImageOps.contain(s, (500, 500), Image.BILINEAR)),
                 ({'op': 'resize', 'width': 300, 'height': 200, 'filter': 'nearest'},
                  lambda s: s.resize((300, 200), Image.NEAREST))]
        for step, make in cases:
            ref = make(srgb_open(f))
            im, err, _ = ours(f, {'pipeline': [step], 'auto_orient': False})
            label = f'resize {step.get("fit", "fill")} {step.get("filter", "lanczos3")} {base}'
            if err or im.size != ref.size:
                fail(f'{label}: {err or im.size} != {ref.size}')
                continue
            check(label, psnr(ref, im), 40)


def test_blur():
    print('blur(sigma) vs Pillow GaussianBlur (>= 36 dB)')
    files = photos()
    for i, f in enumerate(files):
        sigmas = [15] if i % 3 else [0.7, 2, 15]
        src = srgb_open(f)
        src.load()
        for s in sigmas:
            ref = src.filter(ImageFilter.GaussianBlur(s))
            im, err, _ = ours(f, {'pipeline': [{'op': 'blur', 'sigma': s}], 'auto_orient': False})
            if err:
                fail(f'blur({s}) {f}: {err}')
                continue
            check(f'blur({s}) {os.path.basename(f)}', psnr(ref, im), 36)


def test_blur_thumbnail():
    print('blur(15) + thumbnail(1200) vs Pillow (>= 38 dB); times are the job alone, one core')
    tp = {False: 0.0, True: 0.0}
    tb = {False: 0.0, True: 0.0}
    for f in photos():
        t = time.perf_counter()
        ref = srgb_open(f).filter(ImageFilter.GaussianBlur(15))
        ref.thumbnail((1200, 1200))
        dt_pil = time.perf_counter() - t
        for exact in (False, True):
            im, err, dt = ours(f, {'pipeline': [{'op': 'blur', 'sigma': 15},
                                                {'op': 'thumbnail', 'width': 1200, 'height': 1200}],
                                   'exact': exact, 'auto_orient': False})
            if err or im.size != ref.size:
                fail(f'blur+thumbnail {f}: {err or im.size} != {ref.size}')
                continue
            tp[exact] += dt_pil
            tb[exact] += dt
            check(f'blur(15)+thumbnail(1200){" exact" if exact else ""} {os.path.basename(f)}',
                  psnr(ref, im), 38, f'pillow {dt_pil:.3f}s batchd {dt:.3f}s')
    for exact in (False, True):
        if tb[exact] > 0:
            print(f'  total{" exact" if exact else ""}: pillow {tp[exact]:.2f}s batchd '
                  f'{tb[exact]:.2f}s (batchd encodes PNG level 0; pillow does not save)')


def test_shrink_geometry():
    print('shrink-on-load behind rotate / flip / grayscale / EXIF orientation (>= 40 dB)')
    src = os.path.join(DATA, 'photos', 'Bridge_by_Sander_Klootwijk.jpg')
    for deg, tr in ((90, Image.ROTATE_270), (180, Image.ROTATE_180), (270, Image.ROTATE_90)):
        for flip in (None, 'horizontal', 'vertical'):
            steps = [{'op': 'rotate', 'degrees': deg}]
            ref = Image.open(src).transpose(tr)
            if flip:
                steps.append({'op': 'flip', 'direction': flip})
                ref = ref.transpose(Image.FLIP_LEFT_RIGHT if flip == 'horizontal'
                                    else Image.FLIP_TOP_BOTTOM)
            steps += [{'op': 'grayscale'}, {'op': 'thumbnail', 'width': 300, 'height': 300}]
            ref = ref.convert('L')
            ref.thumbnail((300, 300))
            im, err, _ = ours(src, {'pipeline': steps})
            if err or im.size != ref.size:
                fail(f'rotate {deg} flip {flip}: {err or im.size} != {ref.size}')
                continue
            check(f'rotate {deg}, flip {flip}, grayscale, thumbnail(300)', psnr(ref, im), 40)
    full = Image.open(src)
    for orient in (3, 5, 6, 7, 8):
        exif = Image.Exif()
        exif[0x0112] = orient
        path = os.path.join(TMP, 'orient.jpg')
        full.save(path, quality=90, exif=exif.tobytes())
        ref = ImageOps.exif_transpose(Image.open(path))
        ref.thumbnail((400, 400))
        im, err, _ = ours(path, {'pipeline': [{'op': 'thumbnail', 'width': 400, 'height': 400}]})
        if err or im.size != ref.size:
            fail(f'orientation {orient}: {err or im.size} != {ref.size}')
            continue
        check(f'EXIF orientation {orient} + thumbnail(400), decoded shrunk', psnr(ref, im), 40)


def pillow_rgba(path):
    """Pillow's decode as RGBA8, with its 16-bit gray (mode I) taken as the high byte."""
    im = Image.open(path)
    im.load()
    if im.mode in ('I', 'I;16', 'I;16B'):
        trns = im.info.get('transparency')
        vals = list(im.getdata())
        g = Image.new('L', im.size)
        g.putdata([v >> 8 for v in vals])
        a = Image.new('L', im.size)
        a.putdata([0 if trns is not None and v == trns else 255 for v in vals])
        return Image.merge('RGBA', (g, g, g, a))
    with open(path, 'rb') as fh:
        ihdr = fh.read(26)
    depth, ctype = ihdr[24], ihdr[25]
    trns = im.info.get('transparency')
    if ctype == 0 and depth < 8 and isinstance(trns, int):
        # Pillow compares the tRNS gray value at the file's bit depth with pixels already
        # scaled to 8 bits, so it never matches: scale it as libpng and the PNG spec do.
        t8 = trns * 255 // (2 ** depth - 1)
        g = im.convert('L')
        a = g.point(lambda v: 0 if v == t8 else 255)
        return Image.merge('RGBA', (g, g, g, a))
    return im.convert('RGBA')


def test_pngsuite():
    print('PngSuite: valid files pixel-exact as RGBA8, x*.png refused')
    d = os.path.join(DATA, 'pngsuite')
    bad = 0
    n = 0
    for name in sorted(os.listdir(d)):
        if not name.endswith('.png'):
            continue
        f = os.path.join(d, name)
        res, err, _ = run(f, {'format': 'png'}, os.path.join(TMP, 'p.png'))
        if name.startswith('x'):
            if err is None or err['code'] != 'corrupt_image':
                fail(f'pngsuite {name}: not refused as corrupt_image: {res or err}')
            continue
        n += 1
        if err:
            fail(f'pngsuite {name}: {err}')
            continue
        a = pillow_rgba(f)
        b = Image.open(os.path.join(TMP, 'p.png')).convert('RGBA')
        if a.size != b.size or ImageChops.difference(a, b).getbbox() is not None:
            bad += 1
            fail(f'pngsuite {name}: differs from Pillow (PSNR {psnr(a, b):.1f} dB)')
    print(f'  {n - bad}/{n} valid files exact')


def jpeg_files():
    out = []
    for sub in ('jpeg/libjpeg-turbo', 'jpeg/libjxl-flower', 'jpeg/pillow'):
        d = os.path.join(DATA, sub)
        out += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.lower().endswith('.jpg')]
    if not SANITIZED:
        out += [f for f in photos() if f.endswith('.jpg')]
    return out


def test_jpeg_decode():
    print('JPEG decode vs Pillow (>= 40 dB full size, or a clear refusal)')
    for f in jpeg_files():
        base = os.path.relpath(f, DATA)
        try:
            ref = Image.open(f)
            ref.load()
            ref = srgb(ref)
        except Exception as e:  # Pillow refuses it too: we must refuse it cleanly
            res, err, _ = run(f, {'format': 'png', 'png_level': 0})
            print(f'  {base:<60} pillow refuses ({type(e).__name__}); batchd: '
                  f'{err["code"] + ": " + err["message"] if err else "decodes"}')
            continue
        im, err, _ = ours(f, {'auto_orient': False})
        if err:
            ok = err['code'] in ('unsupported_format', 'corrupt_image') and err['message']
            print(f'  {base:<60} refused: {err["code"]}: {err["message"]}')
            if not ok:
                fail(f'{base}: unclear refusal {err}')
            continue
        check(base, psnr(ref, im), 40)
    for n in range(1, 9):
        f = os.path.join(DATA, 'jpeg', 'pillow', f'hopper_orientation_{n}.jpg' if n > 1 else 'hopper.jpg')
        if not os.path.exists(f):
            continue
        ref = ImageOps.exif_transpose(Image.open(f))
        im, err, _ = ours(f, {})
        if err or im.size != ref.size:
            fail(f'orientation {n}: {err or im.size} != {ref.size}')
            continue
        check(f'EXIF orientation {n} (auto_orient) vs exif_transpose', psnr(ref, im), 40)


def test_broken():
    print('broken corpus: a result or a per-job error, never a crash or a hang')
    d = os.path.join(DATA, 'broken')
    per_job = {'too_large', 'unsupported_format', 'corrupt_image', 'invalid_input'}
    for root, _, names in sorted(os.walk(d)):
        for name in sorted(names):
            f = os.path.join(root, name)
            for params in ({'format': 'png', 'png_level': 1},
                           {'pipeline': [{'op': 'thumbnail', 'width': 64, 'height': 64}],
                            'format': 'jpeg'}):
                try:
                    res, err, dt = run(f, params)
                except subprocess.TimeoutExpired:
                    fail(f'{f}: hang')
                    continue
                except RuntimeError as e:
                    fail(str(e))
                    continue
                if err and err['code'] not in per_job:
                    fail(f'{f}: unexpected error {err}')
                if params.get('format') == 'png':
                    what = (f'{err["code"]}: {err["message"]}' if err
                            else f'ok {res["width"]}x{res["height"]}')
                    print(f'  {os.path.relpath(f, d):<50} {dt:6.3f}s {what}')
                if dt > 5:
                    fail(f'{f}: took {dt:.1f}s')


def imgrun(args, env=None):
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([IMGRUN] + args, capture_output=True, text=True, timeout=TIMEOUT, env=e)
    if p.returncode not in (0, 1):
        raise RuntimeError(f'imgrun {args} died: status {p.returncode}: {p.stderr[-500:]}')
    return [json.loads(line) for line in p.stdout.splitlines()]


def expect(label, got, want):
    ok = got == want
    print(f'  {label:<60} {"ok" if ok else f"got {got!r}, want {want!r}"}', flush=True)
    if not ok:
        fail(f'{label}: got {got!r}, want {want!r}')


def code(line):
    return line.get('error', {}).get('code') or line.get('params_error', {}).get('path') or 'ok'


def test_io():
    print('inputs, outputs, variants, limits')
    hopper = os.path.join(DATA, 'jpeg', 'pillow', 'hopper.jpg')
    rgba = os.path.join(DATA, 'pngsuite', 'basn6a08.png')
    root = os.path.join(TMP, 'datadir')
    os.makedirs(os.path.join(root, 'in', 'sub'), exist_ok=True)
    os.makedirs(os.path.join(root, 'out'), exist_ok=True)
    with open(hopper, 'rb') as src, open(os.path.join(root, 'in', 'a.jpg'), 'wb') as dst:
        dst.write(src.read())
    with open(os.path.join(root, 'in', 'notes.txt'), 'w') as f:
        f.write('not an image\n')
    for name, target in (('link_in.jpg', 'a.jpg'), ('link_out', '/etc/passwd'),
                         ('dir_out', os.path.join(DATA, 'jpeg')), ('up', '..'), ('up2', '../..')):
        path = os.path.join(root, 'in', name)
        if not os.path.lexists(path):
            os.symlink(target, path)
    d = ['-d', root, '-O', os.path.join(root, 'out')]
    paths = {'in/a.jpg': 'ok', 'in/link_in.jpg': 'ok', 'in/./a.jpg': 'ok',
             'in/link_out': 'forbidden_path', 'in/dir_out/pillow/hopper.jpg': 'forbidden_path',
             'in/up/in/a.jpg': 'ok', 'in/up2/datadir/in/a.jpg': 'forbidden_path',
             '../etc/passwd': 'forbidden_path',
             'in/../in/a.jpg': 'forbidden_path', '/etc/passwd': 'forbidden_path',
             'in/missing.jpg': 'not_found', 'nowhere/a.jpg': 'not_found',
             'in/sub': 'invalid_input', 'in/notes.txt': 'unsupported_format',
             'in/a.jpg/x': 'not_found'}
    for rel, want in paths.items():
        expect(f'path {rel}', code(imgrun(d + [rel])[0]), want)
    # Without openat2 (old kernels, sandboxes) every symlink is refused.
    fallback = dict(paths, **{'in/link_in.jpg': 'forbidden_path', 'in/up/in/a.jpg': 'forbidden_path'})
    for rel, want in fallback.items():
        expect(f'path {rel} (no openat2)',
               code(imgrun(d + [rel], env={'BATCHD_TEST_NO_OPENAT2': '1'})[0]), want)
    line = imgrun(d + ['-p', json.dumps({'output': 'path', 'format': 'png',
                                         'pipeline': [{'op': 'thumbnail', 'width': 50, 'height': 50}]}),
                       'in/a.jpg'])[0]
    # The output keeps the input's folders (README: output "path" never collides).
    expect('output path: result path', line.get('result', {}).get('path'), 'out/in/a.png')
    out = os.path.join(root, 'out', 'in', 'a.png')
    expect('output path: file written', os.path.exists(out) and Image.open(out).size, (50, 50))
    line = imgrun(['-p', json.dumps({'output': 'path'}), hopper])[0]
    expect('output path without a data dir', code(line), 'invalid_input')
    # base64 in, inline base64 out
    line = imgrun(['-b', '-j', '-p', json.dumps({'format': 'png', 'pipeline': [
        {'op': 'resize', 'width': 32, 'height': 16}]}), hopper])[0]
    import base64
    import io
    data = base64.b64decode(line.get('result', {}).get('data', ''))
    expect('base64 in, inline out: decodes', Image.open(io.BytesIO(data)).size if data else None, (32, 16))
    expect('inline out: bytes', line['result']['bytes'], len(data))
    # variants: one decode, several outputs
    params = {'pipeline': [{'op': 'grayscale'}], 'format': 'png',
              'variants': [{'name': 'small', 'pipeline': [{'op': 'thumbnail', 'width': 20, 'height': 20}]},
                           {'name': 'big', 'pipeline': [{'op': 'rotate', 'degrees': 90},
                                                        {'op': 'crop', 'x': 0, 'y': 0, 'width': 100, 'height': 60}],
                            'format': 'jpeg', 'quality': 50}]}
    line = imgrun(['-p', json.dumps(params), hopper])[0]
    v = line.get('result', {}).get('variants', {})
    expect('variants: names and sizes', {k: (x['format'], x['width'], x['height']) for k, x in v.items()},
           {'small': ('png', 20, 20), 'big': ('jpeg', 100, 60)})
    expect('variants: blob names', line.get('blobs'), ['small.png', 'big.jpeg'])
    line = imgrun(d + ['-p', json.dumps(dict(params, output='path')), 'in/a.jpg'])[0]
    expect('variants to files', sorted(x['path'] for x in line['result']['variants'].values()),
           ['out/in/a-big.jpeg', 'out/in/a-small.png'])
    # alpha: kept in PNG, flattened over white in JPEG
    im, err, _ = ours(rgba, {'pipeline': [{'op': 'blur', 'sigma': 1}]})
    expect('png keeps alpha', im.mode if im else err, 'RGBA')
    out = os.path.join(TMP, 'flat.jpg')
    run(rgba, {'format': 'jpeg', 'quality': 95}, out)
    ref = rgb(Image.open(rgba))
    check('jpeg output flattened over white', psnr(ref, Image.open(out)), 30)
    # limits
    line = imgrun(['-p', '{}', hopper], env={'BATCHD_MAX_INPUT_PIXELS': '10000'})[0]
    expect('input pixel limit', code(line), 'too_large')
    line = imgrun(['-p', json.dumps({'pipeline': [{'op': 'resize', 'width': 20000, 'height': 20000}]}), hopper])[0]
    expect('output pixel limit', code(line), 'too_large')
    line = imgrun(['-p', json.dumps({'pipeline': [{'op': 'crop', 'x': 500, 'y': 0, 'width': 5, 'height': 5}]}), hopper])[0]
    expect('crop outside the image', code(line), 'invalid_input')
    line = imgrun(['-p', json.dumps({'pipeline': [{'op': 'thumbnail', 'width': 10}]}), hopper])[0]
    expect('params error path', code(line), 'pipeline[0].height')


def main():
    if not os.path.exists(IMGRUN):
        print('imgrun not found at', IMGRUN)
        return 1
    if not os.path.isdir(os.path.join(DATA, 'broken')):
        print('test data not found under', DATA, '(set BATCHD_SHARED)')
        return 1
    t = time.time()
    tests = [test_io, test_pngsuite, test_jpeg_decode, test_broken, test_shrink_geometry,
             test_thumbnail_resize,
             test_blur_thumbnail, test_blur]
    only = sys.argv[1:]
    for test in tests:
        if only and test.__name__ not in only:
            continue
        test()
    print(f'{len(failures)} failures, {time.time() - t:.0f}s')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
