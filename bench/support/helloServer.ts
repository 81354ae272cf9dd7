// The baseline for the API benchmarks (bench/api.ts): an express 5 hello world, run as a
// child process on 127.0.0.1:$PORT so it gets its own event loop, just like the app.
import express from 'express';

const app = express();
app.get('/', (_req, res) => {
  res.send('Hello World!');
});
const port = Number(process.env['PORT'] ?? 3000);
const server = app.listen(port, '127.0.0.1', () => process.stderr.write(`hello server on 127.0.0.1:${port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
