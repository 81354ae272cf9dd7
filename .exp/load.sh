set -e
cd /work/main
export DATA_DIR=/tmp/prof/data PORT=8123 HOST=127.0.0.1 ADMIN_PASSWORD=bench-admin-password-0123 LOG_LEVEL=warn ADMIN_RATE_LIMIT_PER_SECOND=100000 ADMIN_RATE_LIMIT_BURST=1000000
node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bin/cli.ts serve > /tmp/prof/out.log 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -s localhost:8123/health >/dev/null && break; sleep 0.3; done
TOKEN=$(curl -s -XPOST localhost:8123/api/v1/auth/login -H 'content-type: application/json' -d '{"username":"admin","password":"bench-admin-password-0123"}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
ID=$(curl -s -XPOST localhost:8123/api/v1/nodes -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"name":"p1","address":"127.0.0.1","check":{"type":"push","interval_s":3600}}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
cat > /tmp/prof/post.lua <<LUA
wrk.method = "POST"
wrk.body = '{"status":"up","latency_ms":12}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
wrk -t2 -c50 -d8s -s /tmp/prof/post.lua http://127.0.0.1:8123/api/v1/nodes/$ID/snapshots | grep -E 'Requests/sec|Non-2xx|timeout'
kill -INT $PID; wait $PID || true
