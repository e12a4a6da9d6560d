// A throwaway HTTP server on 127.0.0.1 that records requests and plays scripted answers:
// { status, body (string or object: JSON), headers, delay (ms before answering), drop (close
// without answering) }.
import http from 'node:http';

export const APP = 'exampleApp0000000001';
export const KEY = 'PSIDexampleKey000001';
export const SECRET = 'example-secret-0123456789';
export const ROOM = `/${APP}/public/room`;

export function refusal(status, message, headers = {}) {
  return { status, body: { code: status, params: [], message }, headers };
}

export async function fakeServer() {
  const requests = [];
  const script = [];
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const url = new URL(request.url, 'http://x');
      const query = {};
      for (const [name, value] of url.searchParams) (query[name] ||= []).push(value);
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: request.method, path: url.pathname, query, headers: request.headers, body, json: () => JSON.parse(body) });
      const answer = script.shift() || {};
      setTimeout(() => {
        if (answer.drop) {
          request.socket.destroy();
          return;
        }
        let payload = answer.body ?? 'OK';
        let type = 'text/plain; charset=utf-8';
        if (typeof payload === 'object') {
          payload = JSON.stringify(payload);
          type = 'application/json; charset=utf-8';
        }
        response.writeHead(answer.status || 200, { 'Content-Type': type, ...(answer.headers || {}) });
        response.end(payload);
      }, answer.delay || 0);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    script: (...answers) => script.push(...answers),
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
