'use strict';
// Socket.IO 4 on Node: the peer of Hubbub's rooms benchmark (bench/README.md).
//
//   node bench/peers/socketio_server.js --port 8000
//
// The same room semantics as python_socketio_app.py, and as close to Hubbub's /v1/ws
// as Socket.IO goes without a store:
//   join {room}        -> enters the room; the others get `presence` {room, joined: [name]};
//                         acknowledged with {room, members: <count>}
//   send {room, text}  -> every member of the room, the sender included, gets
//                         `message` {room, from, text, ts}; acknowledged with {room}
//   leave / disconnect -> the others get `presence` {room, left: [name]}
// Nothing is stored: a client that comes back recovers nothing (Socket.IO's connection
// state recovery keeps its buffer in this process's memory, gone with a restart; off).
// GET /readyz answers 200 once the port is bound. Binds 127.0.0.1 only.

const http = require('http');
const { Server } = require('socket.io');

const args = process.argv.slice(2);
const portArg = args.indexOf('--port');
const port = Number(portArg >= 0 ? args[portArg + 1] : process.env.PORT || 8000);

const httpServer = http.createServer((req, res) => {
  res.writeHead(req.url === '/readyz' ? 200 : 404, { 'content-type': 'text/plain' });
  res.end(req.url === '/readyz' ? 'ok' : 'not found');
});
const io = new Server(httpServer, {
  transports: ['websocket'], // the load generator's clients never poll
  perMessageDeflate: false, // the default, stated: compression is not what is compared
  serveClient: false,
  cors: undefined,
});

function roomSize(room) {
  const members = io.of('/').adapter.rooms.get(room);
  return members ? members.size : 0;
}

io.on('connection', (socket) => {
  const name = String(socket.handshake.query.name || socket.id);
  const joined = new Set();

  socket.on('join', (data, ack) => {
    const room = data && typeof data.room === 'string' ? data.room : null;
    if (!room) { if (typeof ack === 'function') ack({ error: 'bad_frame' }); return; }
    if (!joined.has(room)) {
      joined.add(room);
      socket.join(room);
      socket.to(room).emit('presence', { room, joined: [name], left: [] });
    }
    if (typeof ack === 'function') ack({ room, members: roomSize(room) });
  });

  socket.on('leave', (data, ack) => {
    const room = data && data.room;
    if (joined.delete(room)) {
      socket.leave(room);
      socket.to(room).emit('presence', { room, joined: [], left: [name] });
    }
    if (typeof ack === 'function') ack({ room });
  });

  socket.on('send', (data, ack) => {
    const room = data && data.room;
    if (!joined.has(room) || typeof data.text !== 'string') {
      if (typeof ack === 'function') ack({ error: 'not_joined' });
      return;
    }
    io.to(room).emit('message', { room, from: name, text: data.text, ts: new Date().toISOString() });
    if (typeof ack === 'function') ack({ room });
  });

  socket.on('disconnect', () => {
    for (const room of joined) socket.to(room).emit('presence', { room, joined: [], left: [name] });
  });
});

httpServer.listen({ port, host: '127.0.0.1', backlog: 4096 }); // Node's default (511) would drop SYNs in a join storm
const stop = () => { io.close(); httpServer.close(); setTimeout(() => process.exit(0), 500).unref(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
