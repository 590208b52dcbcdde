# Helpers the benchmark scripts share; sourced after the script has changed to the repo root.

# wait_port HOST PORT: waits up to 10 s for a listener.
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# free_port: a TCP port nothing listens on now; within PORT_RANGE (e.g. 23000-23999) when set, so
# engineers sharing a machine keep to their own ports.
free_port() {
  python3 - "${PORT_RANGE:-}" <<'PY'
import random, socket, sys
lo, _, hi = sys.argv[1].partition("-")
for port in (random.sample(range(int(lo), int(hi) + 1), int(hi) + 1 - int(lo)) if lo else [0]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
}
