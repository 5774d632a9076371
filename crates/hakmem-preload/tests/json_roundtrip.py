"""The preload library's Python workload: build a large JSON document, round-trip it, reshape it.

    python3 json_roundtrip.py [--records N] [--stats]

Everything printed on stdout is a deterministic function of N (default 20000), so that runs with
and without LD_PRELOAD=libhakmem_preload.so can be compared byte for byte (`cargo xtask preload
--check`). With --stats, one more line, `records=N faults=F maxrss_kib=K`, goes to stdout for
`cargo xtask bench-matrix --real`. Which allocator served the run goes to stderr
(`allocator: hakmem MODE` or `allocator: not hakmem`), so the check can tell that the library
really was loaded. Run it with PYTHONMALLOC=malloc to send every Python object through malloc.
"""

import ctypes
import hashlib
import json
import random
import resource
import sys


def allocator():
    try:
        mode = ctypes.CDLL(None).hakmem_mode
    except AttributeError:
        return "not hakmem"
    mode.restype = ctypes.c_char_p
    return "hakmem " + mode().decode()


def record(rng, i):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "ünïcødé", "日本語"]
    return {
        "id": i,
        "name": " ".join(rng.choice(words) for _ in range(rng.randrange(1, 8))),
        "score": round(rng.random() * 1000, 6),
        "active": rng.random() < 0.5,
        "parent": None if i == 0 else rng.randrange(i),
        "tags": [rng.choice(words) for _ in range(rng.randrange(0, 6))],
        "blob": "x" * rng.choice([0, 10, 100, 1000]),
        "nested": {"depth": [list(range(rng.randrange(0, 20))) for _ in range(rng.randrange(0, 4))]},
    }


def main():
    args = sys.argv[1:]
    records = 20000
    if "--records" in args:
        records = int(args[args.index("--records") + 1])
    print("allocator:", allocator(), file=sys.stderr)
    rng = random.Random(42)
    doc = {"version": 1, "records": [record(rng, i) for i in range(records)]}

    text = json.dumps(doc, sort_keys=True)
    back = json.loads(text)
    assert back == doc, "round trip changed the document"
    pretty = json.dumps(back, sort_keys=True, indent=2, ensure_ascii=False)
    again = json.loads(pretty)
    assert again == doc, "the pretty round trip changed the document"

    # Reshape: an index by tag, the records sorted by score, a tree of children.
    by_tag = {}
    for r in again["records"]:
        for t in r["tags"]:
            by_tag.setdefault(t, []).append(r["id"])
    ranked = sorted(again["records"], key=lambda r: (-r["score"], r["id"]))
    children = {}
    for r in again["records"]:
        if r["parent"] is not None:
            children.setdefault(r["parent"], []).append(r["id"])
    summary = {
        "top": [r["id"] for r in ranked[:10]],
        "tags": {t: len(ids) for t, ids in sorted(by_tag.items())},
        "widest": max(children.items(), key=lambda kv: (len(kv[1]), -kv[0]))[0],
        "blob_bytes": sum(len(r["blob"]) for r in again["records"]),
    }
    del doc, back, again, ranked, by_tag, children

    print("records", records)
    print("compact bytes", len(text), "sha256", hashlib.sha256(text.encode()).hexdigest())
    print("pretty bytes", len(pretty), "sha256", hashlib.sha256(pretty.encode()).hexdigest())
    print("summary", json.dumps(summary, sort_keys=True, ensure_ascii=False))
    if "--stats" in args:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"records={records} faults={ru.ru_minflt + ru.ru_majflt} maxrss_kib={ru.ru_maxrss}")


if __name__ == "__main__":
    main()
