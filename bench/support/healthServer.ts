// The node the poller benchmark (bench/monitoring.ts) checks: a bare node:http server on
// 127.0.0.1:$PORT answering every GET with a small JSON health body (a version and two
// metrics, as a real node's /health would), in a child process of its own so that
// serving never shares the event loop of the poller or of the fetch loop it is compared with.
import { createServer } from 'node:http';

const body = JSON.stringify({ status: 'ok', version: '1.4.2', metrics: { wraps: 3, unwraps: 1 } });
const length = String(Buffer.byteLength(body));

const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': length });
  res.end(body);
});
// Longer than any pause between rounds: both sides keep their connections.
server.keepAliveTimeout = 60_000;
const port = Number(process.env['PORT'] ?? 3000);
server.listen(port, '127.0.0.1', () => process.stderr.write(`health server on 127.0.0.1:${port}\n`));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
