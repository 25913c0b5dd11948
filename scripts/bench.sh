#!/usr/bin/env bash
# wxvault benchmark against the built-in Webex simulator (loopback only).
#
#   bash scripts/bench.sh [SUMMARY_FILE]
#
# 1. cargo build --release (BENCH_PROFILE=dev: the dev profile, for a quick look; say so with figures)
# 2. throughput: 2,000 tasks / 3,000 recordings of ~200 kB, rate limit off; `wxvault sync` timed,
#    API calls counted by the simulator (/_sim/stats, everything except media)
# 3. curl reference: the same 3,000 media files with curl --parallel --parallel-max 16
# 4. memory: one 1 GiB recording, peak RSS of `wxvault sync` from /usr/bin/time -v,
#    size and sha256 checked against the simulator's manifest
# 5. Webex Calling: 2,000 converged recordings over 3 days, rate limit off, a calling-only org
#    connected through `wxvault connect --sources calling`; `wxvault sync` timed, API calls per
#    archived recording from the simulator's counters (list + details + metadata; media GETs not
#    counted), every archived MP3 checked against the simulator's Calling manifest
# 6. fleet (only with BENCH_ONLY=fleet): `wxvault worker` processes (the first with --plan) on one
#    machine against `wxvault sim serve --dataset bench --orgs N` (rate limit off): recordings/s
#    with 1, 2 and 4 workers on a SQLite file and on PostgreSQL, then 1, 2 and 4 workers on
#    PostgreSQL with the simulator's 300/min limit on, each for a fixed time; database rows and bytes per archived recording; queue claim
#    latency from `cargo run -p vault --example claim_latency` (1 and 4 claimers, both backends)
# 7. summary on stdout (and in SUMMARY_FILE when given)
#
# Knobs (environment): BENCH_ONLY (wxcc = parts 2-4, calling = part 5, fleet = part 6; default
# wxcc and calling), BENCH_FLEET_ORGS (16), BENCH_FLEET_RECORDINGS (1000 per org),
# BENCH_FLEET_BYTES (50000), BENCH_FLEET_WORKERS ("1 2 4"), BENCH_FLEET_DBS ("sqlite postgres"),
# BENCH_FLEET_LIMITED_WORKERS ("1 2 4"), BENCH_FLEET_LIMITED_SECONDS (150), BENCH_CLAIM_JOBS (2000),
# WXVAULT_TEST_PG (postgres://postgres@127.0.0.1:5432/test: the admin URL fleet databases are made on),
# BENCH_TASKS (2000), BENCH_RECORDINGS (3000), BENCH_RECORDING_BYTES (200000),
# BENCH_LARGE_BYTES (1073741824), BENCH_BATCH_CONCURRENCY (4), BENCH_DOWNLOADS_PER_BATCH (4),
# BENCH_CURL_PARALLEL (16), BENCH_SKIP_MEMORY=1, BENCH_CALLING_RECORDINGS (2000),
# BENCH_CALLING_DAYS (3), BENCH_KEEP=1 (keep the temp dir), BENCH_PROFILE (release; dev for a quick look).
# Part 5 serves its dataset with `wxvault sim serve --dataset bench --tasks 1 --recordings 1
# --calling N --days D` (one WxCC task, so the org has agents to own `user` recordings).
# Nothing leaves 127.0.0.1: the simulator binds loopback and every URL used here points at it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TASKS="${BENCH_TASKS:-2000}"
RECORDINGS="${BENCH_RECORDINGS:-3000}"
RECORDING_BYTES="${BENCH_RECORDING_BYTES:-200000}"
LARGE_BYTES="${BENCH_LARGE_BYTES:-1073741824}"
BATCH_CONCURRENCY="${BENCH_BATCH_CONCURRENCY:-4}"
DOWNLOADS_PER_BATCH="${BENCH_DOWNLOADS_PER_BATCH:-4}"
CURL_PARALLEL="${BENCH_CURL_PARALLEL:-16}"
CALLING_RECORDINGS="${BENCH_CALLING_RECORDINGS:-2000}"
CALLING_DAYS="${BENCH_CALLING_DAYS:-3}"
ONLY="${BENCH_ONLY:-}"
case "$ONLY" in
    "" | wxcc | calling | fleet) ;;
    *) printf 'BENCH_ONLY must be wxcc, calling or fleet (or unset for wxcc and calling), not %s\n' "$ONLY" >&2; exit 2 ;;
esac
run_wxcc() { [[ -z "$ONLY" || "$ONLY" == wxcc ]]; }
run_calling() { [[ -z "$ONLY" || "$ONLY" == calling ]]; }
run_fleet() { [[ "$ONLY" == fleet ]]; }
FLEET_ORGS="${BENCH_FLEET_ORGS:-16}"
FLEET_RECORDINGS="${BENCH_FLEET_RECORDINGS:-1000}"
FLEET_BYTES="${BENCH_FLEET_BYTES:-50000}"
FLEET_WORKERS="${BENCH_FLEET_WORKERS:-1 2 4}"
FLEET_DBS="${BENCH_FLEET_DBS:-sqlite postgres}"
# wxvault's own request budget ([webex] requests_per_minute, shared by every process on one
# database): far above anything reached for the runs with the simulator's limit off, so they
# measure wxvault and the machine; Webex's 300 for the fleet runs with the limit on.
REQUESTS_PER_MINUTE=1000000
FLEET_LIMITED_WORKERS="${BENCH_FLEET_LIMITED_WORKERS:-1 2 4}"
FLEET_LIMITED_SECONDS="${BENCH_FLEET_LIMITED_SECONDS:-150}"
CLAIM_JOBS="${BENCH_CLAIM_JOBS:-2000}"
PG_ADMIN="${WXVAULT_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}"
PG_DBS=()
SUMMARY_FILE="${1:-}"

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in cargo curl python3 sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ ! -x /usr/bin/time ]]; then
    log "/usr/bin/time missing; installing the 'time' package"
    if command -v apt-get >/dev/null; then
        (apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }) \
            || die "cannot install GNU time"
    else
        die "/usr/bin/time (GNU time) is required"
    fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wxvault-bench.XXXXXX")"
SIM_PIDS=()
FLEET_PIDS=()
cleanup() {
    local pid db
    for db in "${PG_DBS[@]:-}"; do
        [[ -n "$db" ]] && psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    for pid in "${FLEET_PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${SIM_PIDS[@]:-}"; do
        [[ -n "$pid" ]] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers (python3, stdlib only) -------------------------------------------------------------
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'PY'
import json, sys, urllib.request

def get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=1800) as r:
        return json.load(r)

def post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)

MEDIA = ("media", "calling_media")

def cmd_stats_api(path):
    """API calls in a /_sim/stats snapshot: every endpoint except media (WxCC and Calling)."""
    s = json.load(open(path))
    print(sum(v for k, v in s["by_endpoint"].items() if k not in MEDIA))

def cmd_endpoints(before, after):
    """Non-media endpoints whose counters moved, as "name delta, …"."""
    a = json.load(open(after))["by_endpoint"]
    b = json.load(open(before))["by_endpoint"]
    print(", ".join(f"{k} {a[k] - b.get(k, 0)}" for k in sorted(a)
                    if k not in MEDIA and a[k] - b.get(k, 0)))

def cmd_calling_stats(before, after):
    """Deltas of calling_list calling_details calling_metadata calling_media, and of every other
    non-media endpoint."""
    a = json.load(open(after))["by_endpoint"]
    b = json.load(open(before))["by_endpoint"]
    d = {k: a[k] - b.get(k, 0) for k in a}
    keys = ["calling_list", "calling_details", "calling_metadata", "calling_media"]
    other = sum(v for k, v in d.items() if k not in keys and k not in MEDIA)
    print(*(d.get(k, 0) for k in keys), other)

def calling_archivable(m, from_ms, to_ms):
    """Recordings a sync over [from_ms, to_ms) with both service types must archive."""
    return [r for r in m["recordings"]
            if r["status"] == "available" and r["size_bytes"] > 0
            and int(from_ms) <= r["create_time_ms"] < int(to_ms)]

def cmd_calling_expect(manifest, from_ms, before_ms, after_ms, window_days, service_types):
    """How many recordings the sync must archive (created before it started) and may archive
    (created before it ended; the simulator clock runs in real time), the dataset size, and the
    fewest list calls that can list them: one sweep per listing window and service type, one
    call per 100 items (at least one per sweep)."""
    m = json.load(open(manifest))
    must = calling_archivable(m, from_ms, before_ms)
    step = int(window_days) * 86_400_000
    list_floor, start = 0, int(from_ms)
    while start < int(before_ms):
        end = min(start + step, int(before_ms))
        for st in service_types.split(","):
            n = sum(1 for r in must if r["service_type"] == st and start <= r["create_time_ms"] < end)
            list_floor += max(1, -(-n // 100))
        start = end
    print(len(must), len(calling_archivable(m, from_ms, after_ms)), len(m["recordings"]), list_floor)

def cmd_calling_check(manifest, root, org, from_ms, before_ms, after_ms):
    """Every <org>/calling/Y/M/D/<id>/<id>.mp3 has the manifest's size and sha256 and a sidecar;
    every required recording is there. Prints files, bytes and sidecars."""
    import hashlib, os
    m = json.load(open(manifest))
    may = {r["id"]: r for r in calling_archivable(m, from_ms, after_ms)}
    must = {r["id"] for r in calling_archivable(m, from_ms, before_ms)}
    files = total = sidecars = 0
    seen = set()
    for d, _, names in os.walk(os.path.join(root, org, "calling")):
        for n in names:
            if not n.endswith(".mp3"):
                continue
            rid = n[:-4]
            r = may.get(rid)
            if r is None:
                sys.exit(f"{n}: not a recording this window should archive")
            data = open(os.path.join(d, n), "rb").read()
            if len(data) != r["size_bytes"] or hashlib.sha256(data).hexdigest() != r["sha256"]:
                sys.exit(f"{n}: size or sha256 differs from the manifest")
            if os.path.exists(os.path.join(d, rid + ".json")):
                sidecars += 1
            files += 1; total += len(data); seen.add(rid)
    if must - seen:
        sys.exit(f"{len(must - seen)} required recordings are not in the archive")
    print(files, total, sidecars)

def cmd_queue(path):
    """queued running done failed from `wxvault queue --json`."""
    q = json.load(open(path))
    print(q["queued"], q["running"], q["done"], q["failed"])

def cmd_archived(path):
    """Recordings archived over every org of `wxvault status --json`."""
    print(sum(o["counts"]["archived"] for o in json.load(open(path))))

def cmd_org_ids(base):
    print(" ".join(o["org_id"] for o in get(base.rstrip("/") + "/_sim/orgs")))

def cmd_field(path, *keys):
    v = json.load(open(path))
    for k in keys:
        v = v[int(k)] if isinstance(v, list) else v[k]
    print(v)

def cmd_urls(base, org, token, from_ms, to_ms, out):
    """Task ids from /v1/tasks (paged by re-querying), then media URLs from captures, 10 at a time."""
    base = base.rstrip("/")
    ids, seen, start = [], set(), int(from_ms)
    while True:
        page = get(f"{base}/v1/tasks?from={start}&to={to_ms}&channelTypes=telephony"
                   f"&pageSize=1000&orgId={org}", token)["data"]
        new = [t for t in page if t["id"] not in seen]
        for t in new:
            seen.add(t["id"]); ids.append(t["id"])
        if len(page) < 1000:
            break
        if not new:
            sys.exit("tasks paging made no progress (more than 1000 tasks share one createdTime?)")
        start = page[-1]["attributes"]["createdTime"]  # inclusive; duplicates are skipped
    urls = []
    for i in range(0, len(ids), 10):
        body = {"query": {"orgId": org, "taskIds": ids[i:i + 10], "urlExpiration": 60,
                          "includeSegments": False, "includeVARecordings": True}}
        for task in post(f"{base}/v1/captures/query", body, token)["data"]:
            for rec in task.get("recording", []):
                urls.append(rec["attributes"]["filePath"])
    for u in urls:
        if not u.startswith("http://127.0.0.1:"):
            sys.exit(f"refusing a non-loopback media URL: {u[:60]}")
    with open(out, "w") as f:
        for u in urls:
            f.write(f'url = "{u}"\n')
    print(f"{len(ids)} {len(urls)}")

def cmd_large(manifest, size):
    """recording_id and sha256 of the manifest's recording of exactly SIZE bytes."""
    m = json.load(open(manifest))
    for r in m["recordings"] + m["optional_recordings"]:
        if r["size_bytes"] == int(size):
            print(r["recording_id"], r["sha256"]); return
    sys.exit("no recording of that size in the manifest")

def cmd_report(path):
    """archived bytes api_calls failed transient_left of the sync report's first org."""
    o = json.load(open(path))["orgs"][0]
    print(o["archived"], o["bytes"], o["api_calls"], len(o["failed"]), o["transient_left"],
          json.dumps(o["outcome"]).replace(" ", ""))

def cmd_curl(path):
    """requests, non-200 answers and bytes from curl's --write-out lines."""
    n = bad = total = 0
    for line in open(path):
        code, size = line.split()
        n += 1; total += int(size); bad += code != "200"
    print(n, bad, total)

getattr(sys.modules[__name__], "cmd_" + sys.argv[1])(*sys.argv[2:])
PY
py() { python3 "$HELPER" "$@"; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
maxrss_kb() { sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$1"; }

# Starts `wxvault sim serve --port 0 …` and sets SIM (base URL), ORG_ID and SIM_IDX.
start_sim() {
    local logf="$1"; shift
    launch_sim "$logf" "$BIN" sim serve --port 0 "$@"
}

# Starts a simulator command (it prints "simulator listening on URL") and waits until it answers.
# Sets SIM, ORG_ID and SIM_IDX (its index in SIM_PIDS, for stop_sim).
launch_sim() {
    local logf="$1"; shift
    : >"$logf"   # exists before the first look below, whoever runs first
    "$@" >"$logf" 2>&1 &
    SIM_IDX=${#SIM_PIDS[@]}
    SIM_PIDS+=("$!")
    local pid=$! i
    SIM=""
    for ((i = 0; i < 600; i++)); do   # up to 60 s (dataset generation included)
        kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2; die "simulator exited"; }
        SIM="$(sed -n 's/^simulator listening on \(http:\/\/127\.0\.0\.1:[0-9]*\/\).*/\1/p' "$logf")"
        if [[ -n "$SIM" ]] && curl -sf -o /dev/null --max-time 2 "${SIM}_sim/orgs"; then break; fi
        SIM=""; sleep 0.1
    done
    [[ -n "$SIM" ]] || die "simulator did not answer within 60 s"
    ORG_ID="$(curl -sf "${SIM}_sim/orgs" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["org_id"])')"
}

# Stops the simulator at index $1 of SIM_PIDS (and forgets it, so cleanup never signals a reused pid).
stop_sim() {
    kill -TERM "${SIM_PIDS[$1]}" 2>/dev/null || true
    wait "${SIM_PIDS[$1]}" 2>/dev/null || true
    SIM_PIDS[$1]=""
}

# Fresh state dir + config (extra TOML in $2); sets CFG and STATE.
write_config() {
    STATE="$1"
    mkdir -p "$STATE/archive"
    CFG="$STATE/wxvault.toml"
    cat >"$CFG" <<EOF
[database]
url = "sqlite://$STATE/wxvault.db"

[storage]
url = "file://$STATE/archive"

[webex]
api_base = "$SIM"
requests_per_minute = $REQUESTS_PER_MINUTE

[wxcc]
api_base = "$SIM"

[vault]
master_key_file = "$STATE/master.key"

[sync]
batch_concurrency = $BATCH_CONCURRENCY
downloads_per_batch = $DOWNLOADS_PER_BATCH
${2:-}
EOF
}

# Fresh state dir + config; grant from the simulator; `wxvault org add`. Sets CFG, STATE, TOKEN.
setup_state() {
    write_config "$1"
    local grant="$STATE/grant.json"
    curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"clientId\":\"$CLIENT_ID\",\"orgId\":\"$ORG_ID\",\"scopes\":[\"cjp:config_read\",\"spark:kms\"]}" \
        "${SIM}_sim/grant" >"$grant"
    TOKEN="$(py field "$grant" access_token)"
    WXVAULT_CLIENT_SECRET="$CLIENT_SECRET" \
        WXVAULT_REFRESH_TOKEN="$(py field "$grant" refresh_token)" \
        WXVAULT_ACCESS_TOKEN="$TOKEN" \
        "$BIN" --config "$CFG" org add --name bench --region us1 --client-id "$CLIENT_ID" >&2
}

# Fresh state dir + config for a calling-only org, connected the way an operator does it:
# `wxvault connect --sources calling --no-browser`, with curl as the browser (the simulator's
# consent page approves at once) and the address it lands on pasted back. Sets CFG and STATE.
setup_calling_state() {
    write_config "$1" "$2"
    local fifo="$STATE/connect.in" out="$STATE/connect.out" url="" location pid fd i
    mkfifo "$fifo"
    WXVAULT_CLIENT_SECRET="$CLIENT_SECRET" "$BIN" --config "$CFG" connect --name bench --region us1 \
        --client-id "$CLIENT_ID" --sources calling --no-browser \
        --redirect-uri http://localhost:8765/callback <"$fifo" >"$out" 2>"$STATE/connect.err" &
    pid=$!
    exec {fd}>"$fifo"
    for ((i = 0; i < 600; i++)); do
        url="$(grep -m1 '^http://127\.0\.0\.1:[0-9]*/' "$out" || true)"
        [[ -n "$url" ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$url" ]] || { exec {fd}>&-; cat "$out" "$STATE/connect.err" >&2; die "wxvault connect printed no loopback authorize link"; }
    location="$(curl -s -o /dev/null --max-time 10 -w '%{redirect_url}' "$url")"
    [[ "$location" == http://localhost:8765/callback?* ]] || { exec {fd}>&-; die "the simulator's consent did not redirect back"; }
    printf '%s\n' "$location" >&"$fd"
    exec {fd}>&-
    wait "$pid" || { cat "$out" "$STATE/connect.err" >&2; die "wxvault connect --sources calling failed"; }
}

# The window: $1 hours (default 25; the bench tasks lie in the last 24 h) back from the
# simulator clock, to now.
window() {
    local now_ms
    now_ms="$(curl -sf "${SIM}_sim/clock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nowMs"])')"
    FROM_MS=$((now_ms - ${1:-25} * 3600 * 1000))
    TO_MS=$((now_ms + 60 * 1000))   # wxvault clamps --to to its own "now"
    FROM="$(date -u -d "@$((FROM_MS / 1000))" +%Y-%m-%dT%H:%M:%SZ)"
    TO="$(date -u -d "@$((TO_MS / 1000))" +%Y-%m-%dT%H:%M:%SZ)"
}

# --- 1. build --------------------------------------------------------------------------------------
PROFILE="${BENCH_PROFILE:-release}"
PROFILE_DIR="$([[ "$PROFILE" == dev ]] && echo debug || echo "$PROFILE")"
log "cargo build --profile $PROFILE"
(cd "$ROOT" && cargo build --profile "$PROFILE" --quiet --bin wxvault)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE_DIR/wxvault"
[[ -x "$BIN" ]] || die "no binary at $BIN"
CLIENT_ID="$(sed -n '/DEMO_CLIENT_ID/,/;/p' "$ROOT/crates/webex-sim/src/config.rs" | grep -o '"[^"]*"' | head -1 | tr -d '"')"
CLIENT_SECRET="$(sed -n '/DEMO_CLIENT_SECRET/,/;/p' "$ROOT/crates/webex-sim/src/config.rs" | grep -o '"[^"]*"' | head -1 | tr -d '"')"
[[ -n "$CLIENT_ID" && -n "$CLIENT_SECRET" ]] || die "cannot read the simulator's demo client from crates/webex-sim/src/config.rs"
export WXVAULT_MASTER_KEY
WXVAULT_MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
unset WXVAULT_CONFIG RUST_LOG

OTHERS="$(pgrep -a 'rustc|cargo' | grep -v "^$$ " || true)"
if [[ -n "$OTHERS" ]]; then
    log "WARNING: other rustc/cargo processes are running; figures may be skewed:"
    printf '%s\n' "$OTHERS" | cut -c1-120 >&2
fi
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- 2. throughput ---------------------------------------------------------------------------------
if run_wxcc; then
    log "throughput: simulator with $TASKS tasks / $RECORDINGS recordings of ~$RECORDING_BYTES bytes, no rate limit"
    start_sim "$WORK/sim-throughput.log" --dataset bench --tasks "$TASKS" --recordings "$RECORDINGS" \
        --recording-bytes "$RECORDING_BYTES" --no-rate-limit
    log "simulator at $SIM, org $ORG_ID"
    THROUGHPUT_IDX=$SIM_IDX
    setup_state "$WORK/throughput"
    window
    curl -sf "${SIM}_sim/stats" >"$WORK/stats-before.json"
    log "wxvault sync --from $FROM --to $TO (batch_concurrency=$BATCH_CONCURRENCY, downloads_per_batch=$DOWNLOADS_PER_BATCH)"
    T0="$(now)"
    rc=0
    /usr/bin/time -v -o "$WORK/time-throughput.txt" \
        "$BIN" --config "$CFG" sync --from "$FROM" --to "$TO" --json >"$WORK/report-throughput.json" \
        2>"$WORK/sync-throughput.err" || rc=$?
    T1="$(now)"
    curl -sf "${SIM}_sim/stats" >"$WORK/stats-after.json"
    [[ $rc -eq 0 ]] || { cat "$WORK/sync-throughput.err" >&2; die "wxvault sync exited with $rc"; }
    read -r ARCHIVED BYTES REPORT_API FAILED LEFT OUTCOME < <(py report "$WORK/report-throughput.json")
    API_CALLS=$(($(py stats_api "$WORK/stats-after.json") - $(py stats_api "$WORK/stats-before.json")))
    ENDPOINTS="$(py endpoints "$WORK/stats-before.json" "$WORK/stats-after.json")"
    MEDIA_GETS=$(($(py field "$WORK/stats-after.json" by_endpoint media) - $(py field "$WORK/stats-before.json" by_endpoint media)))
    WAVS="$(find "$WORK/throughput/archive" -type f -name '*.wav' | wc -l)"
    SIDECARS="$(find "$WORK/throughput/archive" -type f -name '*.json' | wc -l)"
    DISK_BYTES="$(find "$WORK/throughput/archive" -type f -name '*.wav' -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
    WALL="$(calc "round($T1 - $T0, 3)")"
    THROUGHPUT_RSS_KB="$(maxrss_kb "$WORK/time-throughput.txt")"
    log "sync: $ARCHIVED archived, $BYTES bytes in $WALL s; $API_CALLS API calls ($ENDPOINTS); outcome $OUTCOME"
    [[ "$ARCHIVED" -eq "$RECORDINGS" ]] || die "expected $RECORDINGS archived, the report says $ARCHIVED"
    [[ "$WAVS" -eq "$RECORDINGS" ]] || die "expected $RECORDINGS .wav files in the archive, found $WAVS"
    [[ "$DISK_BYTES" -eq "$BYTES" ]] || die "archive holds $DISK_BYTES bytes of audio, the report says $BYTES"

    # --- 3. curl reference -----------------------------------------------------------------------------
    log "curl reference: collecting media URLs (not timed)"
    read -r URL_TASKS URL_COUNT < <(py urls "$SIM" "$ORG_ID" "$TOKEN" "$FROM_MS" "$TO_MS" "$WORK/urls.cfg")
    [[ "$URL_COUNT" -eq "$RECORDINGS" ]] || die "collected $URL_COUNT media URLs from $URL_TASKS tasks, expected $RECORDINGS"
    # a) to /dev/null: the pure transfer floor; this is the reference the ratio is taken against.
    sed 's/$/\noutput = "\/dev\/null"/' "$WORK/urls.cfg" >"$WORK/curl-null.cfg"
    log "curl --parallel --parallel-max $CURL_PARALLEL: $URL_COUNT files -> /dev/null"
    C0="$(now)"
    curl --parallel --parallel-max "$CURL_PARALLEL" --silent --show-error --no-progress-meter \
        --write-out '%{http_code} %{size_download}\n' -K "$WORK/curl-null.cfg" >"$WORK/curl-null.out"
    C1="$(now)"
    read -r CURL_N CURL_BAD CURL_BYTES < <(py curl "$WORK/curl-null.out")
    [[ "$CURL_N" -eq "$RECORDINGS" && "$CURL_BAD" -eq 0 ]] || die "curl: $CURL_N requests, $CURL_BAD not 200"
    [[ "$CURL_BYTES" -eq "$BYTES" ]] || log "note: curl fetched $CURL_BYTES bytes, wxvault $BYTES"
    CURL_WALL="$(calc "round($C1 - $C0, 3)")"
    # b) to files on the same disk as the archive (informational: like for like with writing an archive).
    mkdir -p "$WORK/curl-files"
    awk -v d="$WORK/curl-files" '{print; printf "output = \"%s/%d.wav\"\n", d, NR}' "$WORK/urls.cfg" >"$WORK/curl-files.cfg"
    log "curl --parallel --parallel-max $CURL_PARALLEL: $URL_COUNT files -> disk"
    D0="$(now)"
    curl --parallel --parallel-max "$CURL_PARALLEL" --silent --show-error --no-progress-meter \
        --write-out '%{http_code} %{size_download}\n' -K "$WORK/curl-files.cfg" >"$WORK/curl-files.out"
    D1="$(now)"
    read -r CURLF_N CURLF_BAD _ < <(py curl "$WORK/curl-files.out")
    [[ "$CURLF_N" -eq "$RECORDINGS" && "$CURLF_BAD" -eq 0 ]] || die "curl to disk: $CURLF_N requests, $CURLF_BAD not 200"
    CURL_DISK_WALL="$(calc "round($D1 - $D0, 3)")"
    # (the files stay until the end: deleting thousands of files right before the memory run
    # would charge ext4 inode-allocation work to it; see BENCHMARKS.md)
    stop_sim "$THROUGHPUT_IDX"
fi

# --- 4. memory -------------------------------------------------------------------------------------
if run_wxcc && [[ "${BENCH_SKIP_MEMORY:-0}" != 1 ]]; then
    log "memory: simulator with one $LARGE_BYTES-byte recording"
    start_sim "$WORK/sim-memory.log" --dataset bench --tasks 1 --recordings 1 --recording-bytes 1000 \
        --large-recording-bytes "$LARGE_BYTES" --no-rate-limit
    setup_state "$WORK/memory"
    window
    M0="$(now)"
    rc=0
    /usr/bin/time -v -o "$WORK/time-memory.txt" \
        "$BIN" --config "$CFG" sync --from "$FROM" --to "$TO" --json >"$WORK/report-memory.json" \
        2>"$WORK/sync-memory.err" || rc=$?
    M1="$(now)"
    [[ $rc -eq 0 ]] || { cat "$WORK/sync-memory.err" >&2; die "wxvault sync (memory) exited with $rc"; }
    MEM_WALL="$(calc "round($M1 - $M0, 3)")"
    PEAK_KB="$(maxrss_kb "$WORK/time-memory.txt")"
    log "sync (memory): ${MEM_WALL} s, peak RSS $PEAK_KB kB; fetching the manifest (hashes 1 GiB, takes a while)"
    curl -sf --max-time 1800 "${SIM}_sim/manifest?orgId=$ORG_ID" >"$WORK/manifest.json"
    read -r LARGE_ID LARGE_SHA < <(py large "$WORK/manifest.json" "$LARGE_BYTES")
    LARGE_FILE="$(find "$WORK/memory/archive" -type f -name "$LARGE_ID.*" ! -name '*.json' | head -1)"
    [[ -n "$LARGE_FILE" ]] || die "recording $LARGE_ID is not in the archive"
    LARGE_SIZE="$(stat -c %s "$LARGE_FILE")"
    GOT_SHA="$(sha256sum "$LARGE_FILE" | cut -d' ' -f1)"
    [[ "$LARGE_SIZE" -eq "$LARGE_BYTES" ]] || die "archived large recording has $LARGE_SIZE bytes, expected $LARGE_BYTES"
    [[ "$GOT_SHA" == "$LARGE_SHA" ]] || die "sha256 mismatch: archive $GOT_SHA, manifest $LARGE_SHA"
    MEM_CHECK="size $LARGE_SIZE bytes, sha256 ${GOT_SHA:0:16}… matches the manifest"
    stop_sim "$SIM_IDX"
fi

# --- 5. Webex Calling ------------------------------------------------------------------------------
if run_calling; then
    log "calling: simulator with $CALLING_RECORDINGS Calling recordings over $CALLING_DAYS days, no rate limit"
    start_sim "$WORK/sim-calling.log" --dataset bench --tasks 1 --recordings 1 \
        --recording-bytes 4044 --calling "$CALLING_RECORDINGS" --days "$CALLING_DAYS" --no-rate-limit
    CALLING_IDX=$SIM_IDX
    log "simulator at $SIM, org $ORG_ID; connecting a calling-only org"
    # Both service types, so every available recording of the dataset is archived.
    setup_calling_state "$WORK/calling" '[calling]
service_types = ["calling", "customerAssist"]
window_days = 1'
    window $((CALLING_DAYS * 24 + 1))
    curl -sf "${SIM}_sim/stats" >"$WORK/stats-calling-before.json"
    CB_MS="$(curl -sf "${SIM}_sim/clock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nowMs"])')"
    log "wxvault sync --from $FROM --to $TO (calling only, [calling] window_days = 1)"
    K0="$(now)"
    rc=0
    /usr/bin/time -v -o "$WORK/time-calling.txt" \
        "$BIN" --config "$CFG" sync --from "$FROM" --to "$TO" --json >"$WORK/report-calling.json" \
        2>"$WORK/sync-calling.err" || rc=$?
    K1="$(now)"
    curl -sf "${SIM}_sim/stats" >"$WORK/stats-calling-after.json"
    CA_MS="$(curl -sf "${SIM}_sim/clock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nowMs"])')"
    [[ $rc -eq 0 ]] || { cat "$WORK/sync-calling.err" >&2; die "wxvault sync (calling) exited with $rc"; }
    read -r K_ARCHIVED K_BYTES K_REPORT_API K_FAILED K_LEFT K_OUTCOME < <(py report "$WORK/report-calling.json")
    read -r K_LIST K_DETAILS K_METADATA K_MEDIA K_OTHER < <(py calling_stats "$WORK/stats-calling-before.json" "$WORK/stats-calling-after.json")
    K_API=$((K_LIST + K_DETAILS + K_METADATA))
    K_MEDIA_AUTH=$(($(py field "$WORK/stats-calling-after.json" calling_media_with_authorization) - $(py field "$WORK/stats-calling-before.json" calling_media_with_authorization)))
    K_WALL="$(calc "round($K1 - $K0, 3)")"
    K_RSS_KB="$(maxrss_kb "$WORK/time-calling.txt")"
    log "sync (calling): $K_ARCHIVED archived, $K_BYTES bytes in $K_WALL s; list $K_LIST, details $K_DETAILS, metadata $K_METADATA, media $K_MEDIA, other API $K_OTHER; outcome $K_OUTCOME"
    log "checking the archive against the simulator's Calling manifest (not timed)"
    curl -sf --max-time 600 "${SIM}_sim/calling/manifest?orgId=$ORG_ID" >"$WORK/calling-manifest.json"
    read -r K_MUST K_MAY K_DATASET K_LIST_FLOOR < <(py calling_expect "$WORK/calling-manifest.json" \
        "$FROM_MS" "$CB_MS" "$CA_MS" 1 calling,customerAssist)
    read -r K_MP3S K_DISK_BYTES K_SIDECARS < <(py calling_check "$WORK/calling-manifest.json" "$WORK/calling/archive" "$ORG_ID" "$FROM_MS" "$CB_MS" "$CA_MS")
    [[ "$K_ARCHIVED" -ge "$K_MUST" && "$K_ARCHIVED" -le "$K_MAY" ]] \
        || die "the report says $K_ARCHIVED archived; the manifest expects $K_MUST (up to $K_MAY)"
    [[ "$K_MP3S" -eq "$K_ARCHIVED" && "$K_SIDECARS" -eq "$K_ARCHIVED" ]] \
        || die "archive holds $K_MP3S .mp3 files and $K_SIDECARS sidecars, the report says $K_ARCHIVED"
    [[ "$K_DISK_BYTES" -eq "$K_BYTES" ]] || die "archive holds $K_DISK_BYTES bytes of audio, the report says $K_BYTES"
    [[ "$K_FAILED" -eq 0 && "$K_LEFT" -eq 0 ]] || die "$K_FAILED failed and $K_LEFT transient items in the Calling run"
    stop_sim "$CALLING_IDX"
fi

# --- 6. fleet ----------------------------------------------------------------------------------------
# One fleet run: $1 backend (sqlite|postgres), $2 workers, $3 label, $4 (optional) seconds: run for
# that long and measure what was archived by then, instead of running until the queue is empty.
# Needs SIM. Sets F_WALL, F_ARCHIVED, F_DB_BYTES, F_ROWS (table=rows,…), F_ROWS_TOTAL; with $4 also
# F_API (API calls the simulator answered during the run, media not counted), F_429 and F_PEAK (the
# busiest rolling window the simulator saw, over its whole life).
fleet_run() {
    local backend="$1" n="$2" label="$3" duration="${4:-}" state="$WORK/fleet-$3" url db i org j q queued running done failed
    write_config "$state" "first_lookback_hours = 25

[worker]
concurrency = 2
poll_seconds = 1

[schedule]
interval_minutes = 60"
    if [[ "$backend" == postgres ]]; then
        db="wxv_bench_$(date +%s)_$RANDOM"
        psql "$PG_ADMIN" -qAtc "CREATE DATABASE $db" >/dev/null || die "cannot create database $db on $PG_ADMIN"
        PG_DBS+=("$db")
        url="${PG_ADMIN%/*}/$db"
        sed -i "s|^url = \"sqlite://.*\"|url = \"$url\"|" "$CFG"
    fi
    i=0
    for org in $(py org_ids "$SIM"); do
        curl -sf -X POST -H 'Content-Type: application/json' \
            -d "{\"clientId\":\"$CLIENT_ID\",\"orgId\":\"$org\",\"scopes\":[\"cjp:config_read\",\"spark:kms\"]}" \
            "${SIM}_sim/grant" >"$state/grant.json"
        WXVAULT_CLIENT_SECRET="$CLIENT_SECRET" \
            WXVAULT_REFRESH_TOKEN="$(py field "$state/grant.json" refresh_token)" \
            WXVAULT_ACCESS_TOKEN="$(py field "$state/grant.json" access_token)" \
            "$BIN" --config "$CFG" org add --name "org$i" --region us1 --client-id "$CLIENT_ID" >/dev/null 2>&1 \
            || die "org add failed for $org"
        i=$((i + 1))
    done
    log "fleet $label: $n worker(s), $i orgs, $backend${duration:+, for $duration s}"
    FLEET_PIDS=()
    [[ -z "$duration" ]] || curl -sf "${SIM}_sim/stats" >"$state/stats-before.json"
    F0="$(now)"
    for ((j = 0; j < n; j++)); do
        if [[ $j -eq 0 ]]; then
            "$BIN" --config "$CFG" worker --plan >"$state/worker-$j.log" 2>&1 &
        else
            "$BIN" --config "$CFG" worker >"$state/worker-$j.log" 2>&1 &
        fi
        FLEET_PIDS+=("$!")
    done
    # Done when every org's planned harvest is done and nothing is queued or running — or, for a
    # timed run, when the time is up (what is archived by then counts; the rest is cut off).
    while [[ -n "$duration" ]]; do
        for q in "${FLEET_PIDS[@]}"; do kill -0 "$q" 2>/dev/null || die "fleet $label: a worker exited: $(tail -n 5 "$state"/worker-*.log)"; done
        if [[ "$(calc "int($(now) - $F0 >= $duration)")" == 1 ]]; then
            F1="$(now)"
            curl -sf "${SIM}_sim/stats" >"$state/stats-after.json"
            "$BIN" --config "$CFG" status --json >"$state/status-at-end.json"
            break
        fi
        sleep 0.5
    done
    while [[ -z "$duration" ]]; do
        "$BIN" --config "$CFG" queue --json >"$state/queue.json" 2>/dev/null || true
        read -r queued running done failed < <(py queue "$state/queue.json" 2>/dev/null || echo "x x x x")
        [[ "$failed" == 0 || "$failed" == x ]] || die "fleet $label: $failed job(s) failed (see $state)"
        if [[ "$done" =~ ^[0-9]+$ && "$done" -ge "$i" && "$queued" == 0 && "$running" == 0 ]]; then break; fi
        for q in "${FLEET_PIDS[@]}"; do kill -0 "$q" 2>/dev/null || die "fleet $label: a worker exited: $(tail -n 5 "$state"/worker-*.log)"; done
        sleep 0.2
    done
    [[ -n "$duration" ]] || F1="$(now)"
    for q in "${FLEET_PIDS[@]}"; do kill -TERM "$q" 2>/dev/null || true; done
    for q in "${FLEET_PIDS[@]}"; do wait "$q" || die "fleet $label: a worker did not exit 0 on SIGTERM"; done
    FLEET_PIDS=()
    F_WALL="$(calc "round($F1 - $F0, 2)")"
    if [[ -n "$duration" ]]; then
        F_ARCHIVED="$(py archived "$state/status-at-end.json")"
        F_API=$(($(py stats_api "$state/stats-after.json") - $(py stats_api "$state/stats-before.json")))
        F_429=$(($(py field "$state/stats-after.json" throttled_429) - $(py field "$state/stats-before.json" throttled_429)))
        F_PEAK="$(py field "$state/stats-after.json" peak_requests_in_window)"
    else
        "$BIN" --config "$CFG" status --json >"$state/status.json"
        F_ARCHIVED="$(py archived "$state/status.json")"
    fi
    if [[ "$backend" == postgres ]]; then
        F_DB_BYTES="$(psql "$url" -qAtc "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'wxvault' AND c.relkind = 'r'")"
        F_ROWS=""; F_ROWS_TOTAL=0
        for q in $(psql "$url" -qAtc "SELECT table_name FROM information_schema.tables WHERE table_schema = 'wxvault' AND table_name NOT LIKE '\_sqlx%' ORDER BY 1"); do
            j="$(psql "$url" -qAtc "SELECT count(*) FROM wxvault.$q")"
            F_ROWS_TOTAL=$((F_ROWS_TOTAL + j))
            [[ "$j" -gt 0 ]] && F_ROWS="$F_ROWS $q=$j"
        done
    else
        sqlite3 "$state/wxvault.db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
        F_DB_BYTES="$(stat -c %s "$state/wxvault.db")"
        F_ROWS=""; F_ROWS_TOTAL=0
        for q in $(sqlite3 "$state/wxvault.db" "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\_sqlx%' ESCAPE '\\' ORDER BY 1"); do
            j="$(sqlite3 "$state/wxvault.db" "SELECT count(*) FROM \"$q\"")"
            F_ROWS_TOTAL=$((F_ROWS_TOTAL + j))
            [[ "$j" -gt 0 ]] && F_ROWS="$F_ROWS $q=$j"
        done
    fi
    log "fleet $label: $F_ARCHIVED archived in $F_WALL s ($(calc "round($F_ARCHIVED / ($F1 - $F0), 1)")/s); database $F_DB_BYTES bytes, $F_ROWS_TOTAL rows:$F_ROWS"
    [[ -z "$duration" ]] || return 0   # a timed run's figures go to the limited table
    printf '%-28s %8s %10s %12s %14s %14s\n' "$label" "$n" "$F_ARCHIVED" "$F_WALL" \
        "$(calc "round($F_ARCHIVED / ($F1 - $F0), 1)")" \
        "$(calc "round($F_DB_BYTES / max(1, $F_ARCHIVED))") B, $(calc "round($F_ROWS_TOTAL / max(1, $F_ARCHIVED), 2)") rows" >>"$WORK/fleet.txt"
    printf '    %s rows:%s\n' "$label" "$F_ROWS" >>"$WORK/fleet-rows.txt"
}

if run_fleet; then
    command -v psql >/dev/null || die "psql is required for the fleet benchmark"
    command -v sqlite3 >/dev/null || die "sqlite3 is required for the fleet benchmark"
    : >"$WORK/fleet.txt"; : >"$WORK/fleet-rows.txt"
    log "fleet: simulator with $FLEET_ORGS orgs x $FLEET_RECORDINGS recordings of ~$FLEET_BYTES bytes, no rate limit"
    start_sim "$WORK/sim-fleet.log" --dataset bench --orgs "$FLEET_ORGS" --tasks "$FLEET_RECORDINGS" \
        --recordings "$FLEET_RECORDINGS" --recording-bytes "$FLEET_BYTES" --no-rate-limit
    FLEET_IDX=$SIM_IDX
    for backend in $FLEET_DBS; do
        for n in $FLEET_WORKERS; do
            fleet_run "$backend" "$n" "$backend-$n-unlimited"
        done
    done
    stop_sim "$FLEET_IDX"
    # With Webex's limit on: the same dataset, each worker count for a fixed time on PostgreSQL,
    # a fresh simulator each (its rolling window starts empty). The shared budget, not the
    # workers, sets the pace: the API calls per minute stay just under 300 whatever the count.
    : >"$WORK/fleet-limited.txt"
    for n in $FLEET_LIMITED_WORKERS; do
        log "fleet: simulator with $FLEET_ORGS orgs x $FLEET_RECORDINGS recordings, 300/min limit on, $n worker(s) for $FLEET_LIMITED_SECONDS s"
        start_sim "$WORK/sim-fleet-limited-$n.log" --dataset bench --orgs "$FLEET_ORGS" --tasks "$FLEET_RECORDINGS" \
            --recordings "$FLEET_RECORDINGS" --recording-bytes "$FLEET_BYTES"
        FLEET_IDX=$SIM_IDX
        REQUESTS_PER_MINUTE=300
        fleet_run postgres "$n" "postgres-$n-limited" "$FLEET_LIMITED_SECONDS"
        REQUESTS_PER_MINUTE=1000000
        stop_sim "$FLEET_IDX"
        printf '%-28s %8s %10s %10s %14s %14s %8s %10s\n' "postgres-$n-limited" "$n" "$F_WALL" "$F_ARCHIVED" \
            "$(calc "round($F_ARCHIVED / $F_WALL, 1)")" "$(calc "round($F_API / ($F_WALL / 60), 1)")" \
            "$F_429" "$F_PEAK" >>"$WORK/fleet-limited.txt"
    done
    log "claim latency: cargo run --profile $PROFILE -p vault --example claim_latency ($CLAIM_JOBS queued jobs over 200 lanes)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p vault --example claim_latency)
    CLAIM_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE_DIR/examples/claim_latency"
    : >"$WORK/claims.txt"
    for backend in sqlite postgres; do
        for c in 1 4; do
            WXVAULT_TEST_PG="$PG_ADMIN" "$CLAIM_BIN" "$backend" "$CLAIM_JOBS" "$c" >>"$WORK/claims.txt"
        done
    done
fi

# --- 7. summary ------------------------------------------------------------------------------------
pass() { if python3 -c "import sys; sys.exit(0 if $1 else 1)"; then echo "ok"; else echo "MISSED"; fi; }
if run_wxcc; then
    PER_REC="$(calc "round($API_CALLS / $ARCHIVED, 4)")"
    RPS="$(calc "round($ARCHIVED / ($T1 - $T0), 1)")"
    MBPS="$(calc "round($BYTES / 1e6 / ($T1 - $T0), 1)")"
    RATIO="$(calc "round(($T1 - $T0) / ($C1 - $C0), 2)")"
    RATIO_DISK="$(calc "round(($T1 - $T0) / ($D1 - $D0), 2)")"
fi
if run_calling; then
    K_PER_REC="$(calc "round($K_API / $K_ARCHIVED, 4)")"
    # The floor for this run: the fewest list calls for its sweeps (one per 1-day window and
    # service type, 100 items a page), one details and one metadata call per recording.
    K_FLOOR="$(calc "round(($K_LIST_FLOOR + 2 * $K_ARCHIVED) / $K_ARCHIVED, 4)")"
    K_EXTRA=$((K_API - K_LIST_FLOOR - 2 * K_ARCHIVED))
    K_RPS="$(calc "round($K_ARCHIVED / ($K1 - $K0), 1)")"
    K_MBPS="$(calc "round($K_BYTES / 1e6 / ($K1 - $K0), 1)")"
fi
SUMMARY="$WORK/summary.txt"
{
    echo "wxvault benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)${ONLY:+ (BENCH_ONLY=$ONLY)}"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "load average before: $LOAD_BEFORE"
    echo "build profile: $PROFILE"
    echo "sync settings: batch_concurrency=$BATCH_CONCURRENCY downloads_per_batch=$DOWNLOADS_PER_BATCH"
    if run_wxcc; then
        echo "dataset: $TASKS tasks, $RECORDINGS recordings of ~$RECORDING_BYTES bytes ($BYTES bytes total), rate limit off"
        echo
        echo "throughput"
        printf '  recordings archived      %s (%s .wav files, %s sidecars on disk)\n' "$ARCHIVED" "$WAVS" "$SIDECARS"
        printf '  API calls                %s (%s; media GETs not counted: %s); wxvault counted %s\n' "$API_CALLS" "$ENDPOINTS" "$MEDIA_GETS" "$REPORT_API"
        printf '  API calls / recording    %s   target <= 0.11  %s\n' "$PER_REC" "$(pass "$PER_REC <= 0.11")"
        printf '  wall time                %s s\n' "$WALL"
        printf '  recordings / s           %s\n' "$RPS"
        printf '  MB/s (10^6 B)            %s\n' "$MBPS"
        printf '  peak RSS                 %s MiB\n' "$(calc "round($THROUGHPUT_RSS_KB / 1024, 1)")"
        echo "curl reference (--parallel-max $CURL_PARALLEL)"
        printf '  to /dev/null             %s s\n' "$CURL_WALL"
        printf '  to files                 %s s\n' "$CURL_DISK_WALL"
        printf '  wxvault / curl           %s x   target <= 2  %s   (vs curl to files: %s x)\n' \
            "$RATIO" "$(pass "$RATIO <= 2")" "$RATIO_DISK"
        if [[ "${BENCH_SKIP_MEMORY:-0}" != 1 ]]; then
            echo "memory (one $LARGE_BYTES-byte recording)"
            printf '  peak RSS                 %s MiB   target <= 64  %s\n' \
                "$(calc "round($PEAK_KB / 1024, 1)")" "$(pass "$PEAK_KB / 1024 <= 64")"
            printf '  wall time                %s s (%s MB/s)\n' "$MEM_WALL" "$(calc "round($LARGE_BYTES / 1e6 / ($M1 - $M0), 1)")"
            printf '  check                    %s\n' "$MEM_CHECK"
        fi
    fi
    if run_calling; then
        echo
        echo "webex calling (calling-only org; $K_DATASET recordings over $CALLING_DAYS days in the dataset, $K_MUST to $K_MAY available in the window, both service types; rate limit off)"
        printf '  recordings archived      %s (%s .mp3 files, %s sidecars; size and sha256 of each match the manifest)\n' "$K_ARCHIVED" "$K_MP3S" "$K_SIDECARS"
        printf '  API calls                %s (list %s, details %s, metadata %s; media GETs not counted: %s; other API calls: %s); wxvault counted %s\n' \
            "$K_API" "$K_LIST" "$K_DETAILS" "$K_METADATA" "$K_MEDIA" "$K_OTHER" "$K_REPORT_API"
        printf '  API calls / recording    %s   floor for these sweeps %s (%s list calls), webex-api.md §6: about 2.01; %s call(s) above the floor\n' \
            "$K_PER_REC" "$K_FLOOR" "$K_LIST_FLOOR" "$K_EXTRA"
        printf '  wall time                %s s\n' "$K_WALL"
        printf '  recordings / s           %s\n' "$K_RPS"
        printf '  MB/s (10^6 B)            %s (%s bytes)\n' "$K_MBPS" "$K_BYTES"
        printf '  peak RSS                 %s MiB\n' "$(calc "round($K_RSS_KB / 1024, 1)")"
        printf '  media GETs with an Authorization header (the bearer leaving Webex)  %s\n' "$K_MEDIA_AUTH"
    fi
    if run_fleet; then
        echo
        echo "fleet ($FLEET_ORGS orgs, one lane each; ~$FLEET_BYTES-byte recordings; [worker] concurrency = 2 per process; the first worker plans)"
        printf '%-28s %8s %10s %12s %14s %14s\n' run workers archived "wall s" "recordings/s" "db per rec"
        cat "$WORK/fleet.txt"
        cat "$WORK/fleet-rows.txt"
        echo "with the simulator's 300 requests/min limit on (timed runs; API calls = every call but media GETs)"
        printf '%-28s %8s %10s %10s %14s %14s %8s %10s\n' run workers "wall s" archived "recordings/s" "API calls/min" "429s" "peak/60s"
        cat "$WORK/fleet-limited.txt"
        echo "queue claim latency (Vault::claim_job; each claimer its own pool)"
        sed 's/^/  /' "$WORK/claims.txt"
    fi
} >"$SUMMARY"
echo
cat "$SUMMARY"
if [[ -n "$SUMMARY_FILE" ]]; then
    cp "$SUMMARY" "$SUMMARY_FILE"
fi
