#!/usr/bin/env python3
"""Per-function instruction counts from callgrind files, and a per-stage table.

usage: costs.py LOAD.out IDLE.out MESSAGES [--top N] [--grep REGEX]
Prints (load - idle) / MESSAGES for each stage (inclusive cost of the stage's entry functions,
or self cost for the allocator), plus the top functions by self cost difference.
"""
import re, subprocess, sys, collections

def table(path, inclusive):
    args = ["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", path]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    costs = collections.Counter()
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
        if not m:
            continue
        value = int(m.group(1).replace(",", ""))
        rest = m.group(2).strip()
        if "PROGRAM TOTALS" in rest:
            total = value
            continue
        if ":" not in rest or not rest.endswith("]") or re.search(r"\(\d[\d,]*x\)", rest):
            continue
        name = rest.split(":", 1)[1]
        name = re.sub(r"\s+\[[^\]]*\]$", "", name)
        costs[name] = max(costs[name], value)
    return total, costs

# stage: (regex on function names, inclusive?) — first entry function that matches is used;
# inclusive stages take the max inclusive cost of matching functions (entry points, not nested).
STAGES = [
    ("writer thread, whole", r"^kefu::storage::writer::run$", True),
    ("  chat flush", r"^<kefu::chat::writes::ChatWriterState as kefu::storage::writer::WriterExtension>::flush$", True),
    ("  report figures", r"^kefu::history::daily_figures::record$", True),
    ("  message append (redb inserts, dedup)", r"^kefu::chat::messages::append_with_source$", True),
    ("    of it: redb BtreeMut::insert", r"^redb::tree_store::btree::BtreeMut<.*>::insert$", True),
    ("  commit log append + sync (user space)", r"^kefu::storage::commit_log::CommitLog::append", True),
    ("  redb commit (non-durable)", r"^kefu::storage::writer::Writer::commit_open$", True),
    ("dispatcher (run_dispatcher)", r"^kefu::chat::delivery::run_dispatcher", True),
    ("  frame encoding (ServerFrame::encode)", r"ServerFrame.*::encode$", True),
    ("  Session::send", r"^kefu::net::session::Session::send", True),
    ("  JSON decode (ClientFrame)", r"^serde_json::de::from_str$", True),
    ("session: take_outbound", r"^kefu::net::session::Session::take_outbound", True),
    ("websocket write_all (feed+flush)", r"^kefu::net::websocket::Connection::write_all", True),
    ("tantivy indexer thread", r"^kefu::search::indexer::Indexer::run$", True),
    ("blocking pool (Store::read etc.)", r"^tokio::runtime::blocking::pool::Inner::run$", True),
    ("  redb ReadTransaction::open_table", r"^redb::transactions::ReadTransaction::open_table$", True),
    ("  conversations::get", r"^kefu::chat::conversations::get$", True),
    ("  sites::get", r"^kefu::sites::get$", True),
    ("  people::agents::list", r"^kefu::people::agents::list$", True),
    ("tokio workers (sockets, sessions, dispatcher)", r"^tokio::runtime::scheduler::multi_thread::worker::run$", True),
    ("  websocket task (on_upgrade closure)", r"^axum::extract::ws::WebSocketUpgrade<F>::on_upgrade::\{\{closure\}\}$", True),
    ("tantivy index_documents (segment threads)", r"^tantivy::indexer::index_writer::index_documents$", True),
    ("tantivy merge (rayon)", r"^rayon_core::registry::ThreadBuilder::run$", True),
    ("tracing (core + subscriber)", r"^tracing_core::|^tracing_subscriber::|^tracing::", True),
]

def main():
    load, idle, messages = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lt, linc = table(load, True); it, iinc = table(idle, True)
    _, lself = table(load, False); _, iself = table(idle, False)
    print(f"total: load {lt:,} idle {it:,} difference {lt-it:,} = {(lt-it)/messages:,.0f} per message")
    for label, pattern, inclusive in STAGES:
        rx = re.compile(pattern)
        def best(costs):
            vals = [(v, k) for k, v in costs.items() if rx.search(k)]
            return max(vals) if vals else (0, "")
        if label.startswith("tracing"):
            lv = sum(v for k, v in lself.items() if rx.search(k)); iv = sum(v for k, v in iself.items() if rx.search(k)); name = "(self, summed)"
        else:
            (lv, name), (iv, _) = best(linc), best(iinc)
        print(f"{label:45s} {(lv-iv)/messages:10,.0f}   {name[:90]}")
    alloc = re.compile(r"^(mi_|_mi_|mi_malloc|malloc|free|realloc|calloc|__rust_alloc|__rust_dealloc|__rust_realloc|_int_malloc|_int_free|cfree|__libc_)")
    lv = sum(v for k, v in lself.items() if alloc.search(k)); iv = sum(v for k, v in iself.items() if alloc.search(k))
    print(f"{'allocator (self, mi_*/malloc/free)':45s} {(lv-iv)/messages:10,.0f}")
    mem = re.compile(r"^(__memcpy|__memmove|memcpy|memmove|__memset|memset|__memcmp|memcmp|__strlen|bcmp)")
    lv = sum(v for k, v in lself.items() if mem.search(k)); iv = sum(v for k, v in iself.items() if mem.search(k))
    print(f"{'memcpy/memset/memcmp (self)':45s} {(lv-iv)/messages:10,.0f}")
    top = int(sys.argv[sys.argv.index("--top")+1]) if "--top" in sys.argv else 40
    diff = collections.Counter({k: lself[k] - iself.get(k, 0) for k in lself})
    print("\ntop functions by self cost per message:")
    for k, v in diff.most_common(top):
        print(f"{v/messages:10,.0f}  {k[:140]}")
    diff = collections.Counter({k: linc[k] - iinc.get(k, 0) for k in linc})
    print("\ntop functions by inclusive cost per message:")
    for k, v in diff.most_common(top*2):
        print(f"{v/messages:10,.0f}  {k[:140]}")
if __name__ == "__main__":
    main()
