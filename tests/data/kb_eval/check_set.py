# Checks a business's entries and messages files: python3 check_set.py saas clinic
# (valid JSON, known ids in the same language, kinds, duplicates, shares per kind and language).
import json, sys, collections
import os
D = os.path.dirname(os.path.abspath(__file__)) + "/"
KINDS = {"paraphrase","colloquial","typo","mixed","answer_only","near_miss","unrelated"}
ok = True
def bad(*a):
    global ok; ok = False; print("ERROR", *a)
for biz in sys.argv[1:]:
    ents = {}
    for n, l in enumerate(open(D + f"{biz}_entries.jsonl", encoding="utf-8"), 1):
        e = json.loads(l)
        if set(e) - {"id","lang","question","answer","variants"} or not all(e.get(k) for k in ("id","lang","question","answer")): bad(biz, "entry", n)
        if e["id"] in ents: bad("dup id", e["id"])
        if not e["id"].startswith(f"{biz}-{e['lang']}-"): bad("id/lang", e["id"])
        ents[e["id"]] = e
    seen = set(); c = collections.Counter(); cl = collections.Counter(); covered = collections.Counter()
    for n, l in enumerate(open(D + f"{biz}_fresh.jsonl", encoding="utf-8"), 1):
        m = json.loads(l)
        if set(m) != {"message","expected","lang","kind"}: bad(biz, n, "keys")
        if m["kind"] not in KINDS: bad(biz, n, "kind", m["kind"])
        if m["lang"] not in ("en","zh"): bad(biz, n, "lang")
        key = " ".join(m["message"].lower().split())
        if key in seen: bad(biz, n, "duplicate", m["message"])
        seen.add(key)
        nullk = m["kind"] in ("near_miss","unrelated")
        if nullk != (m["expected"] is None): bad(biz, n, "expected vs kind", m)
        if m["expected"] is not None:
            e = ents.get(m["expected"])
            if not e: bad(biz, n, "unknown id", m["expected"])
            elif e["lang"] != m["lang"]: bad(biz, n, "lang mismatch", m)
            covered[m["expected"]] += 1
        if m["message"].strip() in {ents[i]["question"] for i in ents}: bad(biz, n, "message equals a question", m["message"])
        c[m["kind"]] += 1; cl[(m["lang"], m["kind"])] += 1
    tot = sum(c.values())
    ans = tot - c["near_miss"] - c["unrelated"]
    print(f"{biz}: {len(ents)} entries ({sum(1 for e in ents.values() if e['lang']=='zh')} zh), {tot} messages; "
          f"answerable {ans} ({ans/tot:.0%}), near_miss {c['near_miss']} ({c['near_miss']/tot:.0%}), unrelated {c['unrelated']} ({c['unrelated']/tot:.0%})")
    for lang in ("zh","en"):
        print(" ", lang, sum(v for (l,k),v in cl.items() if l==lang), {k: cl[(lang,k)] for k in sorted(KINDS) if cl[(lang,k)]})
    for i in ents:
        if covered[i] < 3: print("  few messages for", i, covered[i])
print("OK" if ok else "FAILED"); sys.exit(0 if ok else 1)
