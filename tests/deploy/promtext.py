"""A strict parser of the Prometheus text exposition format (version 0.0.4), for tests.

Stricter than Prometheus itself where the format leaves room for sloppiness that would
still be a bug in batchd: every family must have HELP and TYPE before its samples, a
family's samples must be contiguous, no series may repeat, counters must end in `_total`
and never be negative, histograms must have cumulative buckets in ascending `le` order
ending with +Inf equal to `_count`, and the text must end with a newline.

    fams = parse(text)                 # {family name: Family}
    fams["batchd_jobs_total"].value(op="sqrt", outcome="ok")
"""
import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ParseError(ValueError):
    def __init__(self, lineno, msg, line=""):
        super().__init__(f"line {lineno}: {msg}: {line!r}")


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []  # (sample name, frozenset of label items, value)

    def series(self, suffix=""):
        """{frozenset(labels): value} of the samples named NAME+SUFFIX."""
        return {labels: v for (n, labels, v) in self.samples if n == self.name + suffix}

    def value(self, suffix="", default=None, **labels):
        """The value of the one sample NAME+SUFFIX whose labels are exactly LABELS."""
        return self.series(suffix).get(frozenset(labels.items()), default)

    def sum(self, suffix="", **match):
        """Sum of the samples NAME+SUFFIX whose labels include MATCH."""
        items = set(match.items())
        return sum(v for labels, v in self.series(suffix).items() if items <= labels)

    def label_values(self, label, suffix=""):
        return {dict(labels).get(label) for labels in self.series(suffix)}


def _parse_value(s, lineno, line):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", s):
        raise ParseError(lineno, f"bad value {s!r}", line)
    return float(s)


def _parse_labels(s, i, lineno, line):
    """Parses `{a="x",b="y"}` starting at s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = LABEL.match(s, i)
        if not m:
            raise ParseError(lineno, "bad label name", line)
        name = m.group(0)
        if name.startswith("__"):
            raise ParseError(lineno, f"reserved label name {name}", line)
        if name in labels:
            raise ParseError(lineno, f"label {name} twice", line)
        i = m.end()
        if s[i:i + 2] != '="':
            raise ParseError(lineno, "expected =\"", line)
        i += 2
        value = []
        while True:
            if i >= len(s):
                raise ParseError(lineno, "unterminated label value", line)
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ('\\', '"', "n"):
                    raise ParseError(lineno, f"bad escape \\{nxt}", line)
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ParseError(lineno, "newline in label value", line)
            else:
                value.append(c)
                i += 1
        labels[name] = "".join(value)
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        raise ParseError(lineno, "expected , or }", line)


def _family_of(sample, families):
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix):
            base = sample[: -len(suffix)]
            if base in families and families[base].type in ("histogram", "summary"):
                return base
    return sample


def parse(text, require_help=True, conventions=True):
    if text and not text.endswith("\n"):
        raise ParseError(text.count("\n") + 1, "text does not end with a newline")
    families = {}
    order = []  # families in the order their samples appeared
    closed = set()
    current = None
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise ParseError(lineno, "bad metric name", line)
                fam = families.setdefault(name, Family(name))
                if name in closed or (fam.samples and current != name):
                    raise ParseError(lineno, f"{parts[1]} after {name}'s samples", line)
                if parts[1] == "HELP":
                    if fam.help is not None:
                        raise ParseError(lineno, "HELP twice", line)
                    fam.help = parts[3] if len(parts) > 3 else ""
                else:
                    if fam.type is not None:
                        raise ParseError(lineno, "TYPE twice", line)
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ParseError(lineno, "bad TYPE", line)
                    if fam.samples:
                        raise ParseError(lineno, "TYPE after samples", line)
                    fam.type = parts[3]
            continue
        m = NAME.match(line)
        if not m:
            raise ParseError(lineno, "bad sample name", line)
        sname = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, lineno, line)
        rest = line[i:]
        if not rest.startswith(" "):
            raise ParseError(lineno, "expected a space before the value", line)
        fields = rest.split(" ")[1:]
        if not 1 <= len(fields) <= 2 or "" in fields:
            raise ParseError(lineno, "expected `value [timestamp]`", line)
        value = _parse_value(fields[0], lineno, line)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise ParseError(lineno, "bad timestamp", line)
        fname = _family_of(sname, families)
        fam = families.setdefault(fname, Family(fname))
        if current != fname:
            if fname in closed:
                raise ParseError(lineno, f"samples of {fname} are not contiguous", line)
            if current is not None:
                closed.add(current)
            current = fname
            order.append(fname)
        key = frozenset(labels.items())
        if any(n == sname and l == key for (n, l, _) in fam.samples):
            raise ParseError(lineno, "duplicate series", line)
        fam.samples.append((sname, key, value))
        _check_sample(fam, sname, labels, value, lineno, line, conventions)
    for fam in families.values():
        if require_help and fam.samples and (fam.help is None or fam.type is None):
            raise ParseError(0, f"{fam.name} lacks HELP or TYPE")
        if fam.type == "histogram":
            _check_histogram(fam)
    return families


def _check_sample(fam, sname, labels, value, lineno, line, conventions):
    t = fam.type or "untyped"
    if t == "counter":
        if sname != fam.name:
            raise ParseError(lineno, "counter sample name differs from its family", line)
        if conventions and not fam.name.endswith("_total"):
            raise ParseError(lineno, "counter name must end with _total", line)
        if math.isnan(value) or value < 0:
            raise ParseError(lineno, "counter is negative or NaN", line)
    elif t == "gauge":
        if sname != fam.name:
            raise ParseError(lineno, "gauge sample name differs from its family", line)
        if conventions and fam.name.endswith("_total"):
            raise ParseError(lineno, "a gauge must not be named _total", line)
    elif t == "histogram":
        suffix = sname[len(fam.name):]
        if suffix not in ("_bucket", "_sum", "_count"):
            raise ParseError(lineno, "histogram sample must be _bucket, _sum or _count", line)
        if (suffix == "_bucket") != ("le" in labels):
            raise ParseError(lineno, "le belongs on _bucket samples only", line)
        if suffix != "_sum" and (math.isnan(value) or value < 0 or value != int(value)):
            raise ParseError(lineno, "bucket/count must be a non-negative integer", line)
    if conventions and "le" in labels and t != "histogram":
        raise ParseError(lineno, "le label outside a histogram", line)


def _check_histogram(fam):
    groups = {}
    for (n, labels, v) in fam.samples:
        d = dict(labels)
        le = d.pop("le", None)
        groups.setdefault(frozenset(d.items()), []).append((n[len(fam.name):], le, v))
    for key, samples in groups.items():
        buckets = [(le, v) for (s, le, v) in samples if s == "_bucket"]
        counts = [v for (s, _, v) in samples if s == "_count"]
        sums = [v for (s, _, v) in samples if s == "_sum"]
        where = f"{fam.name}{dict(key)}"
        if len(counts) != 1 or len(sums) != 1 or not buckets:
            raise ParseError(0, f"{where}: needs buckets, one _sum and one _count")
        les = [_parse_value(le, 0, where) for le, _ in buckets]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ParseError(0, f"{where}: le not strictly ascending")
        if les[-1] != math.inf:
            raise ParseError(0, f"{where}: no +Inf bucket")
        vals = [v for _, v in buckets]
        if any(b < a for a, b in zip(vals, vals[1:])):
            raise ParseError(0, f"{where}: buckets not cumulative")
        if vals[-1] != counts[0]:
            raise ParseError(0, f"{where}: +Inf bucket {vals[-1]} != _count {counts[0]}")


def _self_test():
    good = (
        '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 3\na_total{x="q\\"\\\\\\n"} 0\n'
        "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
        'h_seconds_bucket{op="s",le="0.1"} 1\nh_seconds_bucket{op="s",le="+Inf"} 2\n'
        'h_seconds_sum{op="s"} 0.5\nh_seconds_count{op="s"} 2\n'
        "# HELP g G.\n# TYPE g gauge\ng -1.5e3\n"
    )
    f = parse(good)
    assert f["a_total"].value(x="1") == 3
    assert f["a_total"].value(x='q"\\\n') == 0
    assert f["h_seconds"].value("_count", op="s") == 2
    bad = [
        "# TYPE a_total counter\n# HELP a_total A.\na_total 1",  # no final newline
        "# HELP a A.\n# TYPE a counter\na 1\n",  # counter without _total
        "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
        "# HELP g G.\n# TYPE g gauge\ng 1\n# HELP k K.\n# TYPE k gauge\nk 1\ng{a=\"b\"} 2\n",
        "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",
        "# HELP g G.\n# TYPE g gauge\ng{a=\"b\",a=\"c\"} 1\n",
        "# HELP g G.\n# TYPE g gauge\ng{a=\"\\t\"} 1\n",
        "# HELP g G.\n# TYPE g gauge\ng  1\n",
        "# HELP g G.\n# TYPE g gauge\ng one\n",
        "g 1\n",  # no HELP/TYPE
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
    ]
    for text in bad:
        try:
            parse(text)
        except ParseError:
            continue
        raise AssertionError(f"accepted bad exposition:\n{text}")


_self_test()
